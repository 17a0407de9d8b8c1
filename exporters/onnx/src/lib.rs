//! libtorch-free ONNX writing for strnas, on onnx-protobuf (the ONNX operator specification, opset 17).
//!
//! [`GraphBuilder`] assembles a graph in topological order (each node may only read names defined before
//! it) and produces a `ModelProto` at opset 17 / IR 8 with a dynamic batch dimension; [`check_structure`]
//! verifies a model's structure (declared opset, unique names, topological order, every input defined, no
//! initializer listed as a graph input); [`weightless`] strips and refills a model's weights (reference graphs);
//! [`lower`] rewrites ops into forms one runtime runs faster (computing the same outputs).
//! [`quantize`] writes a model's post-training static INT8 form (onnxruntime's QDQ format) from calibrated ranges.
//! The strnas network-to-graph translation builds on this.

pub mod lower;
pub mod quantize;
pub mod weightless;

use std::collections::HashSet;

use anyhow::{bail, Result};
use onnx_protobuf::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto, AttributeProto, GraphProto,
    Message, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};

pub use onnx_protobuf::ModelProto;

/// ONNX opset written by strnas (GridSample needs >= 16).
pub const OPSET: i64 = 17;
/// IR version written by strnas (accepted by onnxruntime 1.31 and tract 0.23).
pub const IR_VERSION: i64 = 8;

/// A dimension of a graph input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    Fixed(i64),
    /// A named dynamic dimension (`dim_param`), e.g. `"batch"`.
    Param(String),
}

/// An attribute value for [`GraphBuilder::node`].
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
    Str(String),
}

/// Element types used by strnas graphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    F32,
    I64,
}

impl Elem {
    fn code(self) -> i32 {
        match self {
            Elem::F32 => DataType::FLOAT as i32,
            Elem::I64 => DataType::INT64 as i32,
        }
    }
}

fn value_info(name: &str, elem: Elem, dims: &[Dim]) -> ValueInfoProto {
    let mut shape = TensorShapeProto::new();
    for d in dims {
        let mut dim = tensor_shape_proto::Dimension::new();
        dim.value = Some(match d {
            Dim::Fixed(v) => tensor_shape_proto::dimension::Value::DimValue(*v),
            Dim::Param(p) => tensor_shape_proto::dimension::Value::DimParam(p.clone()),
        });
        shape.dim.push(dim);
    }
    let mut tensor = type_proto::Tensor::new();
    tensor.elem_type = elem.code();
    tensor.shape = protobuf::MessageField::some(shape);
    let mut tp = TypeProto::new();
    tp.value = Some(type_proto::Value::TensorType(tensor));
    let mut vi = ValueInfoProto::new();
    vi.name = name.to_string();
    vi.type_ = protobuf::MessageField::some(tp);
    vi
}

/// Builds one graph; names must be unique and defined before use (checked as nodes are added).
#[derive(Debug, Default)]
pub struct GraphBuilder {
    graph: GraphProto,
    defined: HashSet<String>,
    node_names: HashSet<String>,
}

impl GraphBuilder {
    pub fn new(name: &str) -> Self {
        let mut b = GraphBuilder::default();
        b.graph.name = name.to_string();
        b
    }

    fn define(&mut self, name: &str) -> Result<()> {
        if !self.defined.insert(name.to_string()) {
            bail!("value name {name:?} is defined twice");
        }
        Ok(())
    }

    pub fn input(&mut self, name: &str, elem: Elem, dims: &[Dim]) -> Result<()> {
        self.define(name)?;
        self.graph.input.push(value_info(name, elem, dims));
        Ok(())
    }

    /// Declares a graph output; `name` must already be produced by a node.
    pub fn output(&mut self, name: &str, elem: Elem, dims: &[Dim]) -> Result<()> {
        if !self.defined.contains(name) {
            bail!("output {name:?} is not produced by any node");
        }
        self.graph.output.push(value_info(name, elem, dims));
        Ok(())
    }

    fn initializer(&mut self, name: &str, dims: &[i64], elem: Elem, len: usize, raw: Vec<u8>) -> Result<()> {
        let n: i64 = dims.iter().product();
        if n as usize != len {
            bail!("initializer {name:?}: shape {dims:?} holds {n} values, got {len}");
        }
        self.define(name)?;
        let mut t = TensorProto::new();
        t.name = name.to_string();
        t.dims = dims.to_vec();
        t.data_type = elem.code();
        t.raw_data = raw;
        self.graph.initializer.push(t);
        Ok(())
    }

    /// Adds a float initializer (stored as raw little-endian data).
    pub fn initializer_f32(&mut self, name: &str, dims: &[i64], data: &[f32]) -> Result<()> {
        self.initializer(name, dims, Elem::F32, data.len(), data.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    /// Adds an int64 initializer.
    pub fn initializer_i64(&mut self, name: &str, dims: &[i64], data: &[i64]) -> Result<()> {
        self.initializer(name, dims, Elem::I64, data.len(), data.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    /// Adds a `Constant` node named `name` whose output `name` holds `data` (how some exporters store weights).
    pub fn constant_f32(&mut self, name: &str, dims: &[i64], data: &[f32]) -> Result<()> {
        let n: i64 = dims.iter().product();
        if n as usize != data.len() {
            bail!("constant {name:?}: shape {dims:?} holds {n} values, got {}", data.len());
        }
        self.node("Constant", name, &[], &[name], &[])?;
        let mut t = TensorProto::new();
        t.dims = dims.to_vec();
        t.data_type = Elem::F32.code();
        t.raw_data = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut a = AttributeProto::new();
        a.name = "value".into();
        a.type_ = AttributeType::TENSOR.into();
        a.t = protobuf::MessageField::some(t);
        self.graph.node.last_mut().expect("node just added").attribute.push(a);
        Ok(())
    }

    /// Appends a node; every input must be defined already (an empty name marks an omitted optional input).
    pub fn node(&mut self, op: &str, name: &str, inputs: &[&str], outputs: &[&str], attrs: &[(&str, Attr)]) -> Result<()> {
        if !self.node_names.insert(name.to_string()) {
            bail!("node name {name:?} is used twice");
        }
        for i in inputs.iter().filter(|i| !i.is_empty()) {
            if !self.defined.contains(*i) {
                bail!("node {name:?} ({op}) reads {i:?}, which no earlier node, input or initializer defines");
            }
        }
        for o in outputs {
            self.define(o).map_err(|e| anyhow::anyhow!("node {name:?} ({op}): {e}"))?;
        }
        let mut n = NodeProto::new();
        n.op_type = op.to_string();
        n.name = name.to_string();
        n.input = inputs.iter().map(|s| s.to_string()).collect();
        n.output = outputs.iter().map(|s| s.to_string()).collect();
        for (k, v) in attrs {
            let mut a = AttributeProto::new();
            a.name = k.to_string();
            match v {
                Attr::Int(i) => {
                    a.type_ = AttributeType::INT.into();
                    a.i = *i;
                }
                Attr::Ints(is) => {
                    a.type_ = AttributeType::INTS.into();
                    a.ints = is.clone();
                }
                Attr::Float(f) => {
                    a.type_ = AttributeType::FLOAT.into();
                    a.f = *f;
                }
                Attr::Str(s) => {
                    a.type_ = AttributeType::STRING.into();
                    a.s = s.as_bytes().to_vec();
                }
            }
            n.attribute.push(a);
        }
        self.graph.node.push(n);
        Ok(())
    }

    /// Finishes the model with the strnas producer fields and `metadata` as metadata_props.
    pub fn finish(self, producer_version: &str, metadata: &[(&str, String)]) -> ModelProto {
        let mut m = ModelProto::new();
        m.ir_version = IR_VERSION;
        let mut op = OperatorSetIdProto::new();
        op.domain = String::new();
        op.version = OPSET;
        m.opset_import.push(op);
        m.producer_name = "strnas".into();
        m.producer_version = producer_version.into();
        m.graph = protobuf::MessageField::some(self.graph);
        for (k, v) in metadata {
            let mut e = StringStringEntryProto::new();
            e.key = k.to_string();
            e.value = v.clone();
            m.metadata_props.push(e);
        }
        m
    }
}

/// Replaces `model`'s metadata_props with `props`, in order.
pub fn set_metadata(model: &mut ModelProto, props: &[(&str, String)]) {
    model.metadata_props = props
        .iter()
        .map(|(k, v)| {
            let mut e = StringStringEntryProto::new();
            e.key = k.to_string();
            e.value = v.clone();
            e
        })
        .collect();
}

/// A graph input or output as declared: name, ONNX element type code and dimensions (an unnamed dynamic
/// dimension is `Dim::Param("")`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueDecl {
    pub name: String,
    pub elem: i32,
    pub dims: Vec<Dim>,
}

/// What a model declares and holds, for any ONNX model (not only strnas ones).
#[derive(Debug, Clone, Default)]
pub struct Inspection {
    /// Graph inputs the caller must feed (initializers listed as inputs, as old exporters do, are left out).
    pub inputs: Vec<ValueDecl>,
    pub outputs: Vec<ValueDecl>,
    /// Elements of floating-point weight tensors: initializers and `Constant` node values, subgraphs included.
    pub weight_elements: u64,
    /// Nodes, subgraphs included.
    pub nodes: usize,
    /// Node count per op type (`domain::Op` outside the default domain).
    pub op_counts: std::collections::BTreeMap<String, usize>,
    pub metadata: std::collections::BTreeMap<String, String>,
    /// Default-domain opset, when declared.
    pub opset: Option<i64>,
}

/// ONNX element type names by code (`tensor_proto::DataType`).
pub fn elem_name(code: i32) -> &'static str {
    match code {
        1 => "float32",
        2 => "uint8",
        3 => "int8",
        4 => "uint16",
        5 => "int16",
        6 => "int32",
        7 => "int64",
        8 => "string",
        9 => "bool",
        10 => "float16",
        11 => "float64",
        12 => "uint32",
        13 => "uint64",
        16 => "bfloat16",
        _ => "unknown",
    }
}

fn is_float(code: i32) -> bool {
    matches!(code, 1 | 10 | 11 | 16)
}

fn decl(v: &ValueInfoProto) -> ValueDecl {
    let (mut elem, mut dims) = (0, vec![]);
    if let Some(type_proto::Value::TensorType(t)) = v.type_.as_ref().and_then(|t| t.value.as_ref()) {
        elem = t.elem_type;
        if let Some(shape) = t.shape.as_ref() {
            dims = shape
                .dim
                .iter()
                .map(|d| match &d.value {
                    Some(tensor_shape_proto::dimension::Value::DimValue(v)) => Dim::Fixed(*v),
                    Some(tensor_shape_proto::dimension::Value::DimParam(p)) => Dim::Param(p.clone()),
                    _ => Dim::Param(String::new()),
                })
                .collect();
        }
    }
    ValueDecl { name: v.name.clone(), elem, dims }
}

fn tensor_elements(t: &TensorProto) -> u64 {
    t.dims.iter().map(|&d| d.max(0) as u64).product()
}

fn inspect_graph(g: &GraphProto, out: &mut Inspection) {
    out.weight_elements += g.initializer.iter().filter(|t| is_float(t.data_type)).map(tensor_elements).sum::<u64>();
    for n in &g.node {
        out.nodes += 1;
        let op = if n.domain.is_empty() || n.domain == "ai.onnx" { n.op_type.clone() } else { format!("{}::{}", n.domain, n.op_type) };
        *out.op_counts.entry(op).or_default() += 1;
        for a in &n.attribute {
            if n.op_type == "Constant" {
                if let Some(t) = a.t.as_ref().filter(|t| is_float(t.data_type)) {
                    out.weight_elements += tensor_elements(t);
                }
            }
            for sub in a.g.as_ref().into_iter().chain(a.graphs.iter()) {
                inspect_graph(sub, out);
            }
        }
    }
}

/// Inspects `model`: its inputs and outputs, weights, nodes, metadata and opset.
pub fn inspect(model: &ModelProto) -> Inspection {
    let mut out = Inspection {
        opset: model.opset_import.iter().find(|o| o.domain.is_empty() || o.domain == "ai.onnx").map(|o| o.version),
        metadata: model.metadata_props.iter().map(|e| (e.key.clone(), e.value.clone())).collect(),
        ..Default::default()
    };
    if let Some(g) = model.graph.as_ref() {
        let inits: HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
        out.inputs = g.input.iter().filter(|i| !inits.contains(i.name.as_str())).map(decl).collect();
        out.outputs = g.output.iter().map(decl).collect();
        inspect_graph(g, &mut out);
    }
    out
}

/// Serialises a model to protobuf bytes.
pub fn to_bytes(model: &ModelProto) -> Result<Vec<u8>> {
    Ok(model.write_to_bytes()?)
}

/// Parses protobuf bytes into a model; a message without a graph is an error.
pub fn from_bytes(bytes: &[u8]) -> Result<ModelProto> {
    let model = ModelProto::parse_from_bytes(bytes)?;
    // Protobuf reads an empty buffer (or one of unrelated fields) as an empty message: no graph means no model.
    if model.graph.is_none() {
        bail!("no graph (an empty file, or not an ONNX model)");
    }
    Ok(model)
}

/// Structural problems of `model` (empty when sound): declared default-domain opset, IR version, unique
/// node and value names, topological order with every input defined, outputs produced, and no initializer
/// listed among the graph inputs.
pub fn check_structure(model: &ModelProto) -> Vec<String> {
    let mut problems = vec![];
    if !model.opset_import.iter().any(|o| o.domain.is_empty() || o.domain == "ai.onnx") {
        problems.push("no default-domain opset is declared".to_string());
    }
    if model.ir_version < 3 {
        problems.push(format!("IR version {} is too old", model.ir_version));
    }
    let Some(g) = model.graph.as_ref() else {
        problems.push("the model has no graph".into());
        return problems;
    };
    let mut defined: HashSet<&str> = HashSet::new();
    let inits: HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    for i in &g.input {
        if inits.contains(i.name.as_str()) {
            problems.push(format!("initializer {:?} is listed as a graph input", i.name));
        }
        if !defined.insert(&i.name) {
            problems.push(format!("value {:?} is defined twice", i.name));
        }
    }
    for t in &g.initializer {
        if !defined.insert(&t.name) {
            problems.push(format!("value {:?} is defined twice", t.name));
        }
    }
    let mut names = HashSet::new();
    for n in &g.node {
        if !n.name.is_empty() && !names.insert(n.name.as_str()) {
            problems.push(format!("node name {:?} is used twice", n.name));
        }
        for i in n.input.iter().filter(|i| !i.is_empty()) {
            if !defined.contains(i.as_str()) {
                problems.push(format!("node {:?} ({}) reads {:?} before it is defined", n.name, n.op_type, i));
            }
        }
        for o in &n.output {
            if !defined.insert(o) {
                problems.push(format!("value {o:?} is defined twice (node {:?})", n.name));
            }
        }
    }
    for o in &g.output {
        if !defined.contains(o.name.as_str()) {
            problems.push(format!("graph output {:?} is never produced", o.name));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> GraphBuilder {
        let mut g = GraphBuilder::new("t");
        g.input("x", Elem::F32, &[Dim::Param("batch".into()), Dim::Fixed(2)]).unwrap();
        g.initializer_f32("w", &[2], &[1.0, 2.0]).unwrap();
        g.node("Mul", "mul", &["x", "w"], &["y"], &[]).unwrap();
        g.node("ArgMax", "argmax", &["y"], &["i"], &[("axis", Attr::Int(1)), ("keepdims", Attr::Int(0))]).unwrap();
        g.output("y", Elem::F32, &[Dim::Param("batch".into()), Dim::Fixed(2)]).unwrap();
        g.output("i", Elem::I64, &[Dim::Param("batch".into())]).unwrap();
        g
    }

    #[test]
    fn builds_a_sound_model_that_round_trips() {
        let m = tiny().finish("0", &[("k", "v".into())]);
        assert!(check_structure(&m).is_empty(), "{:?}", check_structure(&m));
        let back = from_bytes(&to_bytes(&m).unwrap()).unwrap();
        assert_eq!(back.opset_import[0].version, OPSET);
        assert_eq!(back.ir_version, IR_VERSION);
        assert_eq!(back.graph.node.len(), 2);
        assert_eq!(back.metadata_props[0].value, "v");
    }

    #[test]
    fn builder_rejects_undefined_and_duplicate_names() {
        let mut g = tiny();
        let e = g.node("Relu", "r", &["nope"], &["z"], &[]).unwrap_err().to_string();
        assert!(e.contains("\"nope\""), "{e}");
        let e = g.node("Relu", "mul", &["x"], &["z"], &[]).unwrap_err().to_string();
        assert!(e.contains("used twice"), "{e}");
        let e = g.initializer_f32("w2", &[3], &[1.0]).unwrap_err().to_string();
        assert!(e.contains("holds 3 values"), "{e}");
    }

    #[test]
    fn inspection_counts_constant_weights_and_skips_initializer_inputs() {
        let mut g = tiny();
        g.constant_f32("c", &[2, 3], &[0.0; 6]).unwrap();
        let mut m = g.finish("0", &[("k", "v".into())]);
        // An old-style exporter lists the initializer among the inputs too.
        m.graph.as_mut().unwrap().input.push(value_info("w", Elem::F32, &[Dim::Fixed(2)]));
        let i = inspect(&from_bytes(&to_bytes(&m).unwrap()).unwrap());
        assert_eq!(i.inputs.len(), 1);
        assert_eq!(i.inputs[0].dims, vec![Dim::Param("batch".into()), Dim::Fixed(2)]);
        assert_eq!(elem_name(i.outputs[1].elem), "int64");
        assert_eq!(i.weight_elements, 2 + 6);
        assert_eq!(i.nodes, 3);
        assert_eq!(i.op_counts["Constant"], 1);
        assert_eq!(i.metadata["k"], "v");
        assert_eq!(i.opset, Some(OPSET));
    }

    #[test]
    fn checker_finds_order_and_input_problems() {
        let mut m = tiny().finish("0", &[]);
        let g = m.graph.as_mut().unwrap();
        g.node.swap(0, 1);
        g.input.push(value_info("w", Elem::F32, &[Dim::Fixed(2)]));
        let p = check_structure(&m);
        assert!(p.iter().any(|s| s.contains("reads \"y\" before it is defined")), "{p:?}");
        assert!(p.iter().any(|s| s.contains("listed as a graph input")), "{p:?}");
    }
}
