//! libtorch-free ONNX writing for strnas, on onnx-protobuf (REFERENCE.md §5).
//!
//! [`GraphBuilder`] assembles a graph in topological order (each node may only read names defined before
//! it) and produces a `ModelProto` at opset 17 / IR 8 with a dynamic batch dimension; [`check_structure`]
//! verifies a model's structure (declared opset, unique names, topological order, every input defined, no
//! initializer listed as a graph input). The strnas network-to-graph translation builds on this.

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

/// Serialises a model to protobuf bytes.
pub fn to_bytes(model: &ModelProto) -> Result<Vec<u8>> {
    Ok(model.write_to_bytes()?)
}

/// Parses protobuf bytes.
pub fn from_bytes(bytes: &[u8]) -> Result<ModelProto> {
    Ok(ModelProto::parse_from_bytes(bytes)?)
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
