//! The search space around a skeleton spec (the paper's §3.1): every cell of the rectifier's localisation
//! network and of the feature extractor is a searchable edge whose candidates follow its role; everything
//! else (stems, extractor head, TPS FCs and sampler, height pooling, BiLSTM blocks, the head) is fixed.
//!
//! | role | candidates |
//! |---|---|
//! | first cell | mbconv k in {3,5,7}, expansion 1 |
//! | normal cell | identity (where input and output shapes agree), mbconv k in {3,5,7} x e in {3,6} |
//! | reduction cell | mbconv k in {3,5,7} x e in {3,6} |
//!
//! A spec is *in* a space when it has the skeleton's shapes and strides and a candidate op at every edge; its
//! [`skeleton_hash`] then equals the space's.

use anyhow::{bail, Context, Result};

use crate::ops::{self, Node, Part};
use crate::spec::arch::{Arch, Cell, CellRole, Op};
use crate::spec::file::{CellSpec, FirstCellSpec, OpKind, RectifierSpec, SpecFile};

pub const KERNELS: [u32; 3] = [3, 5, 7];
pub const EXPANSIONS: [u32; 2] = [3, 6];

/// The candidate ops of a cell, in a fixed order (identity first where allowed).
pub fn candidates(cell: &Cell) -> Vec<Op> {
    let mb = |e: u32| KERNELS.iter().map(move |&k| Op::MbConv { kernel: k, expansion: e });
    match cell.role {
        CellRole::First => mb(1).collect(),
        role => {
            let mut v = vec![];
            if role == CellRole::Normal && cell.input == cell.output {
                v.push(Op::Identity);
            }
            v.extend(KERNELS.iter().flat_map(|&k| EXPANSIONS.iter().map(move |&e| Op::MbConv { kernel: k, expansion: e })));
            v
        }
    }
}

/// One searchable edge: a cell at its place, with its candidates.
#[derive(Debug, Clone)]
pub struct Edge {
    pub part: Part,
    /// Inventory path (`extractor.cells.3`).
    pub path: String,
    pub cell: Cell,
    pub candidates: Vec<Op>,
}

impl Edge {
    /// The block of candidate `op` at this edge.
    pub fn node(&self, op: Op) -> Node {
        let cell = Cell { op, ..self.cell.clone() };
        Node { part: self.part, path: self.path.clone(), scope: self.path.clone(), layer: crate::ops::cell::layer(&cell) }
    }
}

/// A skeleton and its searchable edges.
#[derive(Debug, Clone)]
pub struct Space {
    pub base: Arch,
    pub edges: Vec<Edge>,
}

fn cnn_edges(edges: &mut Vec<Edge>, part: Part, prefix: &str, c: &crate::spec::arch::Cnn) {
    let mut push = |path: String, cell: &Cell| edges.push(Edge { part, path, candidates: candidates(cell), cell: cell.clone() });
    push(format!("{prefix}.first"), &c.first);
    for (i, cell) in c.cells.iter().enumerate() {
        push(format!("{prefix}.cells.{i}"), cell);
    }
}

impl Space {
    /// The space around `base`'s skeleton: every cell of both CNNs searchable.
    pub fn around(base: Arch) -> Self {
        let mut edges = vec![];
        if let Some(t) = &base.rectifier {
            cnn_edges(&mut edges, Part::Rectifier, "rectifier", &t.localization);
        }
        cnn_edges(&mut edges, Part::Extractor, "extractor", &base.extractor);
        Space { base, edges }
    }

    /// The fixed blocks of the network (everything but the edges), in forward order.
    pub fn fixed_nodes(&self) -> Vec<Node> {
        let searchable: std::collections::HashSet<&str> = self.edges.iter().map(|e| e.path.as_str()).collect();
        ops::network(&self.base).into_iter().filter(|n| !searchable.contains(n.path.as_str())).collect()
    }

    /// The ops of `arch` at every edge; an error names the first edge where `arch` leaves the space.
    pub fn ops_of(&self, arch: &Arch) -> Result<Vec<Op>> {
        if skeleton_hash(&arch.spec) != skeleton_hash(&self.base.spec) {
            bail!("{} is not in the space of {}: its skeleton (shapes, strides, fixed parts) differs", arch.name, self.base.name);
        }
        self.edges
            .iter()
            .map(|e| {
                let c = cell_at(arch, &e.path).with_context(|| format!("{}: no cell {}", arch.name, e.path))?;
                if e.candidates.contains(&c.op) {
                    Ok(c.op)
                } else {
                    bail!("{}: {} at {} is not a candidate there", arch.name, c.op, e.path)
                }
            })
            .collect()
    }

    /// The candidate index of `arch`'s op at every edge (see [`Space::ops_of`]).
    pub fn choice_of(&self, arch: &Arch) -> Result<Vec<usize>> {
        Ok(self.ops_of(arch)?.iter().zip(&self.edges).map(|(op, e)| e.candidates.iter().position(|c| c == op).expect("ops_of checks membership")).collect())
    }

    /// The ops of candidate indices `choice` (one per edge).
    pub fn ops_at(&self, choice: &[usize]) -> Vec<Op> {
        self.edges.iter().zip(choice).map(|(e, &i)| e.candidates[i]).collect()
    }

    /// The architecture with `ops[i]` at edge `i` (cells that are not edges keep the base's op), as a
    /// validated spec named `name`.
    pub fn with_ops(&self, ops: &[Op], name: &str) -> Result<Arch> {
        if ops.len() != self.edges.len() {
            bail!("{} ops for {} edges", ops.len(), self.edges.len());
        }
        let mut spec = self.base.spec.clone();
        spec.name = name.to_string();
        spec.description = Some(format!("drawn from the space of {}", self.base.name));
        spec.reference = None;
        for (e, &op) in self.edges.iter().zip(ops) {
            set_cell(&mut spec, &e.path, op).with_context(|| format!("edge {}", e.path))?;
        }
        crate::spec::resolve(&spec).map_err(|e| anyhow::anyhow!("{}", e.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))).context(format!("building {name}"))
    }

    /// Keeps only the edges of `parts` searchable (the others keep the base's ops).
    pub fn restrict(&mut self, parts: &[Part]) {
        self.edges.retain(|e| parts.contains(&e.part));
    }

    /// A uniformly random architecture of the space.
    pub fn random(&self, rng: &mut crate::rng::Rng, name: &str) -> Result<Arch> {
        let ops: Vec<Op> = self.edges.iter().map(|e| e.candidates[rng.below(e.candidates.len())]).collect();
        self.with_ops(&ops, name)
    }
}

/// The cell of `arch` at inventory path `path` (`rectifier.first`, `extractor.cells.3`).
pub fn cell_at<'a>(arch: &'a Arch, path: &str) -> Option<&'a Cell> {
    let cnn = match path.split('.').next()? {
        "rectifier" => &arch.rectifier.as_ref()?.localization,
        "extractor" => &arch.extractor,
        _ => return None,
    };
    let rest: Vec<&str> = path.split('.').skip(1).collect();
    match rest.as_slice() {
        ["first"] => Some(&cnn.first),
        ["cells", i] => cnn.cells.get(i.parse::<usize>().ok()?),
        _ => None,
    }
}

/// Sets the cell at inventory path `path` (`rectifier.first`, `extractor.cells.3`) of `spec` to `op`.
fn set_cell(spec: &mut SpecFile, path: &str, op: Op) -> Result<()> {
    let (first, cells) = match path.split('.').next() {
        Some("rectifier") => match &mut spec.rectifier {
            RectifierSpec::Tps(t) => (&mut t.first_cell, &mut t.cells),
            RectifierSpec::None => bail!("the spec has no rectifier"),
        },
        Some("extractor") => (&mut spec.extractor.first_cell, &mut spec.extractor.cells),
        _ => bail!("not a cell path"),
    };
    let rest: Vec<&str> = path.split('.').skip(1).collect();
    match (rest.as_slice(), op) {
        (["first"], Op::MbConv { kernel, .. }) => {
            first.kernel = kernel;
            first.expansion = None;
        }
        (["cells", i], op) => {
            let c = i.parse::<usize>().ok().and_then(|i| cells.get_mut(i)).context("no such cell")?;
            match op {
                Op::Identity => {
                    c.op = OpKind::Identity;
                    c.kernel = None;
                    c.expansion = None;
                }
                Op::MbConv { kernel, expansion } => {
                    c.op = OpKind::Mbconv;
                    c.kernel = Some(kernel);
                    c.expansion = Some(expansion);
                }
            }
        }
        _ => bail!("{op} cannot be placed there"),
    }
    Ok(())
}

/// Hash of a spec's skeleton: [`crate::spec::arch_hash`] with every cell's op erased, so all architectures of
/// one space share it.
pub fn skeleton_hash(spec: &SpecFile) -> String {
    let mut s = spec.clone();
    let erase = |first: &mut FirstCellSpec, cells: &mut [CellSpec]| {
        first.kernel = 0;
        first.expansion = None;
        for c in cells {
            c.op = OpKind::Mbconv;
            c.kernel = None;
            c.expansion = None;
        }
    };
    if let RectifierSpec::Tps(t) = &mut s.rectifier {
        erase(&mut t.first_cell, &mut t.cells);
    }
    erase(&mut s.extractor.first_cell, &mut s.extractor.cells);
    crate::spec::arch_hash(&s)
}
