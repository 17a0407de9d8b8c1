//! Host tensors: what an [`Engine`](super::Engine) is fed and what it hands back, independent of any runtime.

use serde::{Deserialize, Serialize};

/// Tensor values in host memory, row-major, one variant per element type strnas can feed or fetch.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    U8(Vec<u8>),
    I8(Vec<i8>),
    Bool(Vec<bool>),
}

impl Data {
    /// The ONNX element type name (`float32`, `int64`, ...), as [`ConcreteInput::elem`] spells it.
    pub fn elem(&self) -> &'static str {
        match self {
            Data::F32(_) => "float32",
            Data::F64(_) => "float64",
            Data::I64(_) => "int64",
            Data::I32(_) => "int32",
            Data::U8(_) => "uint8",
            Data::I8(_) => "int8",
            Data::Bool(_) => "bool",
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Data::F32(d) => d.len(),
            Data::F64(d) => d.len(),
            Data::I64(d) => d.len(),
            Data::I32(d) => d.len(),
            Data::U8(d) => d.len(),
            Data::I8(d) => d.len(),
            Data::Bool(d) => d.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values at `range` (in row-major order), as a new `Data` of the same type.
    pub fn range(&self, range: std::ops::Range<usize>) -> Data {
        match self {
            Data::F32(d) => Data::F32(d[range].to_vec()),
            Data::F64(d) => Data::F64(d[range].to_vec()),
            Data::I64(d) => Data::I64(d[range].to_vec()),
            Data::I32(d) => Data::I32(d[range].to_vec()),
            Data::U8(d) => Data::U8(d[range].to_vec()),
            Data::I8(d) => Data::I8(d[range].to_vec()),
            Data::Bool(d) => Data::Bool(d[range].to_vec()),
        }
    }
}

/// A named tensor in host memory: an input to feed (`shape.iter().product() == data.len()`), or an output
/// fetched after a run.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Data,
}

/// An input with its values (a [`HostTensor`] on its way in).
pub type InputData = HostTensor;

impl HostTensor {
    /// A float32 tensor.
    pub fn f32(name: &str, shape: Vec<usize>, data: Vec<f32>) -> Self {
        HostTensor { name: name.to_string(), shape, data: Data::F32(data) }
    }

    /// Item `i` of the first axis, keeping that axis (extent 1). Panics if `i` is out of range.
    pub fn item(&self, i: usize) -> HostTensor {
        let per = self.shape[1..].iter().product::<usize>();
        let mut shape = self.shape.clone();
        shape[0] = 1;
        HostTensor { name: self.name.clone(), shape, data: self.data.range(i * per..(i + 1) * per) }
    }
}

/// One model input with a concrete shape: its name, ONNX element type name (`float32`, ...) and dimensions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConcreteInput {
    pub name: String,
    pub elem: String,
    pub shape: Vec<usize>,
}
