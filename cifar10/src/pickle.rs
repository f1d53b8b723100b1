//! A minimal, safe pickle reader: enough of the pickle VM to load the CIFAR-10 Python batches.
//!
//! The official `cifar-10-python.tar.gz` files were written by Python 2's cPickle with
//! protocol 2: a dict whose values are byte strings (`U`/`T` opcodes), lists of small ints,
//! and a numpy array pickled through `numpy.core.multiarray._reconstruct` + `BUILD`. Python 3
//! re-pickles of the same data use `BINUNICODE`/`BINBYTES`, frames (protocol 4) or
//! `_codecs.encode` for byte strings; those are understood too.
//!
//! Nothing is ever imported or executed: `GLOBAL` only records the name, and `REDUCE`/`BUILD`
//! build inert [`Value::Reduce`] nodes that the caller interprets.
//!
//! Only the shapes CIFAR-10 files use can be built: a dict may hold lists, but lists, tuples
//! and objects hold no lists or dicts, and nothing holds a dict. So no value can contain itself
//! (a list appended to itself would leak, as `Rc` cycles do; found by `fuzz/`), and nesting is
//! bounded by [`MAX_DEPTH`], so dropping a value cannot overflow a thread's stack.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Errors carry the byte offset of the opcode that failed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PickleError {
    #[error("unexpected end of data at byte {0}")]
    Truncated(usize),
    #[error("unsupported pickle opcode 0x{op:02x} at byte {at}")]
    UnknownOpcode { op: u8, at: usize },
    #[error("malformed pickle at byte {at}: {what}")]
    Malformed { at: usize, what: String },
}

/// A dict's items in insertion order, shared like the dict itself.
pub type DictItems = Rc<RefCell<Vec<(Value, Value)>>>;

/// A pickled value. Lists and dicts are shared and mutable, as in Python, because pickles
/// memoize a container before filling it.
#[derive(Debug, Clone)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// Python 2 `str` or Python 3 `bytes`.
    Bytes(Rc<Vec<u8>>),
    /// Python `unicode` / Python 3 `str`.
    Str(Rc<str>),
    Tuple(Rc<Vec<Value>>),
    List(Rc<RefCell<Vec<Value>>>),
    Dict(DictItems),
    /// A `module.name` reference, never resolved.
    Global {
        module: String,
        name: String,
    },
    /// `callable(*args)`, then `__setstate__(state)` if a BUILD followed.
    Reduce {
        callable: Rc<Value>,
        args: Rc<Value>,
        state: Option<Rc<Value>>,
    },
}

impl Value {
    /// The text of a str/bytes value (keys in the CIFAR dicts are either, depending on Python).
    pub fn as_text(&self) -> Option<String> {
        match self {
            Value::Str(s) => Some(s.to_string()),
            _ => self
                .as_bytes()
                .map(|b| String::from_utf8_lossy(&b).into_owned()),
        }
    }

    /// The content of a byte string: Python 2 `str`, Python 3 `bytes`, or Python 3's
    /// protocol-2 spelling of bytes, `_codecs.encode(latin1_text, 'latin1')`.
    pub fn as_bytes(&self) -> Option<Rc<Vec<u8>>> {
        match self {
            Value::Bytes(b) => Some(b.clone()),
            Value::Reduce {
                callable,
                args,
                state: None,
            } if matches!(callable.as_ref(), Value::Global { module, name } if module == "_codecs" && name == "encode") =>
            {
                let Value::Tuple(a) = args.as_ref() else {
                    return None;
                };
                let Some(Value::Str(text)) = a.first() else {
                    return None;
                };
                text.chars()
                    .map(|c| u8::try_from(c as u32).ok())
                    .collect::<Option<Vec<u8>>>()
                    .map(Rc::new)
            }
            _ => None,
        }
    }

    /// Looks a key up in a dict value, matching str and bytes keys alike.
    pub fn get(&self, key: &str) -> Option<Value> {
        match self {
            Value::Dict(items) => items
                .borrow()
                .iter()
                .find(|(k, _)| k.as_text().as_deref() == Some(key))
                .map(|(_, v)| v.clone()),
            _ => None,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Bytes(_) => "bytes",
            Value::Str(_) => "str",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global { .. } => "global",
            Value::Reduce { .. } => "object",
        }
    }
}

/// Stack entries: values, or the MARK that tuple/list/dict opcodes pop back to.
enum Slot {
    Mark,
    Val(Value),
}

/// Deepest nesting of tuples and objects a pickle may build (CIFAR-10's are 4 deep).
pub const MAX_DEPTH: u32 = 32;

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    /// Offset of the opcode being executed, for error messages.
    op_at: usize,
    stack: Vec<Slot>,
    memo: HashMap<u32, Value>,
    /// Nesting depth of every container built, by the address of its shared allocation (an
    /// object's is its callable's), so memo copies cost nothing to measure.
    depths: HashMap<usize, u32>,
}

/// Parses one pickle and returns the value left by STOP.
pub fn load(data: &[u8]) -> Result<Value, PickleError> {
    Machine {
        data,
        pos: 0,
        op_at: 0,
        stack: Vec::new(),
        memo: HashMap::new(),
        depths: HashMap::new(),
    }
    .run()
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or(PickleError::Truncated(self.data.len()))?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, PickleError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, PickleError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, PickleError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn line(&mut self) -> Result<&'a str, PickleError> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(PickleError::Truncated(self.data.len()))?;
        let line =
            std::str::from_utf8(&rest[..n]).map_err(|_| self.malformed("non-UTF-8 text line"))?;
        self.pos += n + 1;
        Ok(line)
    }

    fn len_u64(&mut self) -> Result<usize, PickleError> {
        let n = self.u64()?;
        usize::try_from(n).map_err(|_| self.malformed(format!("length {n} too large")))
    }

    fn key(v: &Value) -> Option<usize> {
        match v {
            Value::Tuple(t) => Some(Rc::as_ptr(t) as *const () as usize),
            Value::List(l) => Some(Rc::as_ptr(l) as *const () as usize),
            Value::Dict(d) => Some(Rc::as_ptr(d) as *const () as usize),
            Value::Reduce { callable, .. } => Some(Rc::as_ptr(callable) as *const () as usize),
            _ => None,
        }
    }

    fn depth(&self, v: &Value) -> u32 {
        Self::key(v)
            .and_then(|k| self.depths.get(&k).copied())
            .unwrap_or(0)
    }

    /// Records that `container` now holds `items` (all of them, or newly added ones), after
    /// checking what it may hold and how deep that makes it.
    fn hold<'v>(
        &mut self,
        container: &Value,
        items: impl IntoIterator<Item = &'v Value>,
    ) -> Result<(), PickleError> {
        let mut depth = self.depth(container).max(1);
        for item in items {
            let allowed = match (container, item) {
                (_, Value::Dict(_)) => false,
                (Value::Dict(_), Value::List(_)) => true,
                (_, Value::List(_)) => false,
                _ => true,
            };
            if !allowed {
                return Err(self.malformed(format!(
                    "a {} inside a {}: only a dict may hold lists, and nothing may hold a dict",
                    item.type_name(),
                    container.type_name()
                )));
            }
            depth = depth.max(self.depth(item) + 1);
        }
        if depth > MAX_DEPTH {
            return Err(self.malformed(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        if let Some(k) = Self::key(container) {
            self.depths.insert(k, depth);
        }
        Ok(())
    }

    /// Pushes a new container holding `items`.
    fn push_container(&mut self, v: Value, items: &[Value]) -> Result<(), PickleError> {
        self.hold(&v, items)?;
        self.push(v);
        Ok(())
    }

    fn malformed(&self, what: impl Into<String>) -> PickleError {
        PickleError::Malformed {
            at: self.op_at,
            what: what.into(),
        }
    }

    fn push(&mut self, v: Value) {
        self.stack.push(Slot::Val(v));
    }

    fn pop(&mut self) -> Result<Value, PickleError> {
        match self.stack.pop() {
            Some(Slot::Val(v)) => Ok(v),
            Some(Slot::Mark) => Err(self.malformed("expected a value, found MARK")),
            None => Err(self.malformed("stack underflow")),
        }
    }

    fn top(&self) -> Result<&Value, PickleError> {
        match self.stack.last() {
            Some(Slot::Val(v)) => Ok(v),
            _ => Err(self.malformed("expected a value on the stack")),
        }
    }

    /// Pops everything down to the last MARK (removing the mark), in push order.
    fn pop_to_mark(&mut self) -> Result<Vec<Value>, PickleError> {
        let mark = self
            .stack
            .iter()
            .rposition(|s| matches!(s, Slot::Mark))
            .ok_or_else(|| self.malformed("no MARK on the stack"))?;
        let items = self.stack.split_off(mark + 1);
        self.stack.pop();
        Ok(items
            .into_iter()
            .map(|s| match s {
                Slot::Val(v) => v,
                Slot::Mark => unreachable!("rposition found the last mark"),
            })
            .collect())
    }

    fn bytes(&mut self, n: usize) -> Result<(), PickleError> {
        let b = self.take(n)?.to_vec();
        self.push(Value::Bytes(Rc::new(b)));
        Ok(())
    }

    fn unicode(&mut self, n: usize) -> Result<(), PickleError> {
        let b = self.take(n)?;
        let s = std::str::from_utf8(b)
            .map_err(|_| self.malformed("invalid UTF-8 in unicode string"))?;
        self.push(Value::Str(Rc::from(s)));
        Ok(())
    }

    fn memo_put(&mut self, key: u32) -> Result<(), PickleError> {
        let v = self.top()?.clone();
        self.memo.insert(key, v);
        Ok(())
    }

    fn memo_get(&mut self, key: u32) -> Result<(), PickleError> {
        let v = self
            .memo
            .get(&key)
            .cloned()
            .ok_or_else(|| self.malformed(format!("memo key {key} not set")))?;
        self.push(v);
        Ok(())
    }

    fn list_target(&mut self) -> Result<Rc<RefCell<Vec<Value>>>, PickleError> {
        match self.top()? {
            Value::List(l) => Ok(l.clone()),
            other => Err(self.malformed(format!("APPEND to a {}", other.type_name()))),
        }
    }

    fn dict_target(&mut self) -> Result<DictItems, PickleError> {
        match self.top()? {
            Value::Dict(d) => Ok(d.clone()),
            other => Err(self.malformed(format!("SETITEM on a {}", other.type_name()))),
        }
    }

    /// The interpreter's loop: one arm per opcode. It stays one function on purpose (it is
    /// longer than a screen): the opcodes share the machine's stack and memo, and a table of
    /// small functions would only move each arm's three lines away from its opcode.
    fn run(mut self) -> Result<Value, PickleError> {
        loop {
            self.op_at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    // PROTO
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(
                            self.malformed(format!("pickle protocol {proto} is not supported"))
                        );
                    }
                }
                0x95 => {
                    // FRAME: a length prefix only; the opcodes follow inline.
                    self.u64()?;
                }
                b'.' => return self.pop(), // STOP
                b'(' => self.stack.push(Slot::Mark),
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v.into()))
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Value::Int(v.into()))
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Value::Int(v.into()))
                }
                0x8a => {
                    // LONG1: little-endian two's complement of n bytes.
                    let n = self.u8()? as usize;
                    if n > 8 {
                        return Err(
                            self.malformed(format!("LONG1 of {n} bytes does not fit in 64 bits"))
                        );
                    }
                    let b = self.take(n)?;
                    let mut v: i64 = 0;
                    for (i, &byte) in b.iter().enumerate() {
                        v |= (byte as i64) << (8 * i);
                    }
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    self.push(Value::Int(v))
                }
                b'I' => {
                    // INT (text), also used for True/False by protocol 0.
                    let line = self.line()?;
                    let v = match line {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        _ => Value::Int(
                            line.parse()
                                .map_err(|_| self.malformed(format!("bad INT {line:?}")))?,
                        ),
                    };
                    self.push(v)
                }
                b'G' => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.push(Value::Float(f64::from_be_bytes(a)))
                }
                b'U' => {
                    let n = self.u8()? as usize;
                    self.bytes(n)?
                }
                b'T' => {
                    let n = self.u32()? as usize;
                    self.bytes(n)?
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    self.bytes(n)?
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    self.bytes(n)?
                }
                0x8e => {
                    let n = self.len_u64()?;
                    self.bytes(n)?
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    self.unicode(n)?
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    self.unicode(n)?
                }
                0x8d => {
                    let n = self.len_u64()?;
                    self.unicode(n)?
                }
                b')' => self.push_container(Value::Tuple(Rc::new(Vec::new())), &[])?,
                0x85 => {
                    let a = self.pop()?;
                    let items = vec![a];
                    self.push_container(Value::Tuple(Rc::new(items.clone())), &items)?
                }
                0x86 => {
                    let b = self.pop()?;
                    let a = self.pop()?;
                    let items = vec![a, b];
                    self.push_container(Value::Tuple(Rc::new(items.clone())), &items)?
                }
                0x87 => {
                    let c = self.pop()?;
                    let b = self.pop()?;
                    let a = self.pop()?;
                    let items = vec![a, b, c];
                    self.push_container(Value::Tuple(Rc::new(items.clone())), &items)?
                }
                b't' => {
                    let items = self.pop_to_mark()?;
                    self.push_container(Value::Tuple(Rc::new(items.clone())), &items)?
                }
                b']' => self.push_container(Value::List(Rc::new(RefCell::new(Vec::new()))), &[])?,
                b'l' => {
                    let items = self.pop_to_mark()?;
                    self.push_container(Value::List(Rc::new(RefCell::new(items.clone()))), &items)?
                }
                b'a' => {
                    let v = self.pop()?;
                    let list = self.list_target()?;
                    self.hold(&Value::List(list.clone()), [&v])?;
                    list.borrow_mut().push(v);
                }
                b'e' => {
                    let items = self.pop_to_mark()?;
                    let list = self.list_target()?;
                    self.hold(&Value::List(list.clone()), &items)?;
                    list.borrow_mut().extend(items);
                }
                b'}' => self.push_container(Value::Dict(Rc::new(RefCell::new(Vec::new()))), &[])?,
                b'd' => {
                    let items = self.pop_to_mark()?;
                    let pairs = self.pairs(items.clone())?;
                    self.push_container(Value::Dict(Rc::new(RefCell::new(pairs))), &items)?
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let dict = self.dict_target()?;
                    self.hold(&Value::Dict(dict.clone()), [&k, &v])?;
                    dict.borrow_mut().push((k, v));
                }
                b'u' => {
                    let items = self.pop_to_mark()?;
                    let dict = self.dict_target()?;
                    self.hold(&Value::Dict(dict.clone()), &items)?;
                    let pairs = self.pairs(items)?;
                    dict.borrow_mut().extend(pairs);
                }
                b'c' => {
                    let module = self.line()?.to_string();
                    let name = self.line()?.to_string();
                    self.push(Value::Global { module, name })
                }
                0x93 => {
                    let name = self
                        .pop()?
                        .as_text()
                        .ok_or_else(|| self.malformed("STACK_GLOBAL name is not a string"))?;
                    let module = self
                        .pop()?
                        .as_text()
                        .ok_or_else(|| self.malformed("STACK_GLOBAL module is not a string"))?;
                    self.push(Value::Global { module, name })
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let object = Value::Reduce {
                        callable: Rc::new(callable.clone()),
                        args: Rc::new(args.clone()),
                        state: None,
                    };
                    self.push_container(object, &[callable, args])?
                }
                0x81 => {
                    // NEWOBJ: cls.__new__(cls, *args); same shape as REDUCE for our purposes.
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let object = Value::Reduce {
                        callable: Rc::new(cls.clone()),
                        args: Rc::new(args.clone()),
                        state: None,
                    };
                    self.push_container(object, &[cls, args])?
                }
                b'b' => {
                    let new_state = self.pop()?;
                    let object = match self.stack.last() {
                        Some(Slot::Val(v @ Value::Reduce { .. })) => v.clone(),
                        _ => return Err(self.malformed("BUILD on something that is not an object")),
                    };
                    self.hold(&object, [&new_state])?;
                    if let Some(Slot::Val(Value::Reduce { state, .. })) = self.stack.last_mut() {
                        *state = Some(Rc::new(new_state));
                    }
                }
                b'q' => {
                    let k = self.u8()? as u32;
                    self.memo_put(k)?
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memo_put(k)?
                }
                0x94 => {
                    let k = self.memo.len() as u32;
                    self.memo_put(k)?
                }
                b'h' => {
                    let k = self.u8()? as u32;
                    self.memo_get(k)?
                }
                b'j' => {
                    let k = self.u32()?;
                    self.memo_get(k)?
                }
                b'0' => {
                    self.pop()?;
                }
                other => {
                    return Err(PickleError::UnknownOpcode {
                        op: other,
                        at: self.op_at,
                    })
                }
            }
        }
    }

    fn pairs(&self, items: Vec<Value>) -> Result<Vec<(Value, Value)>, PickleError> {
        if !items.len().is_multiple_of(2) {
            return Err(self.malformed("odd number of items for a dict"));
        }
        let mut it = items.into_iter();
        let mut pairs = Vec::new();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            pairs.push((k, v));
        }
        Ok(pairs)
    }
}

/// A numpy array recovered from its pickled form.
#[derive(Debug, Clone, PartialEq)]
pub struct NdArray {
    pub shape: Vec<usize>,
    /// numpy type string, e.g. "u1" or "<i8".
    pub dtype: String,
    pub fortran_order: bool,
    pub data: Rc<Vec<u8>>,
}

/// Interprets `numpy.core.multiarray._reconstruct(ndarray, (0,), 'b')` + BUILD
/// `(version, shape, dtype(...), is_fortran, raw_bytes)`.
pub fn as_ndarray(v: &Value) -> Result<NdArray, String> {
    let Value::Reduce {
        callable, state, ..
    } = v
    else {
        return Err(format!("expected a numpy array, found {}", v.type_name()));
    };
    match callable.as_ref() {
        Value::Global { module, name }
            if (module == "numpy.core.multiarray" || module == "numpy._core.multiarray")
                && name == "_reconstruct" => {}
        other => {
            return Err(format!(
                "expected numpy.core.multiarray._reconstruct, found {other:?}"
            ))
        }
    }
    let state = state
        .as_deref()
        .ok_or("numpy array without state (no BUILD)")?;
    let Value::Tuple(fields) = state else {
        return Err("numpy array state is not a tuple".into());
    };
    let [_version, shape, dtype, fortran, raw] = fields.as_slice() else {
        return Err(format!(
            "numpy array state has {} fields, expected 5",
            fields.len()
        ));
    };
    let shape = match shape {
        Value::Tuple(dims) => dims
            .iter()
            .map(|d| match d {
                Value::Int(n) if *n >= 0 => Ok(*n as usize),
                other => Err(format!("bad array dimension {other:?}")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        other => {
            return Err(format!(
                "array shape is a {}, expected tuple",
                other.type_name()
            ))
        }
    };
    let dtype = match dtype {
        Value::Reduce { args, .. } => match args.as_ref() {
            Value::Tuple(a) => a
                .first()
                .and_then(Value::as_text)
                .ok_or("dtype without a type string")?,
            _ => return Err("dtype arguments are not a tuple".into()),
        },
        other => {
            return Err(format!(
                "dtype is a {}, expected numpy.dtype",
                other.type_name()
            ))
        }
    };
    let fortran_order = matches!(fortran, Value::Bool(true) | Value::Int(1));
    let data = raw
        .as_bytes()
        .ok_or_else(|| format!("array data is a {}, expected bytes", raw.type_name()))?;
    Ok(NdArray {
        shape,
        dtype,
        fortran_order,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_small_protocol_2_dict() {
        // pickle.dumps({'a': [1, 300, -2], 'b': (None, True)}, protocol=2) from CPython.
        let bytes = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01M,\x01J\xfe\xff\xff\xffeX\x01\x00\x00\x00bq\x03N\x88\x86q\x04u.";
        let v = load(bytes).unwrap();
        let Value::List(a) = v.get("a").unwrap() else {
            panic!("a is not a list")
        };
        let ints: Vec<i64> = a
            .borrow()
            .iter()
            .map(|x| if let Value::Int(i) = x { *i } else { 0 })
            .collect();
        assert_eq!(ints, vec![1, 300, -2]);
        assert!(
            matches!(v.get("b"), Some(Value::Tuple(t)) if matches!(t.as_slice(), [Value::None, Value::Bool(true)]))
        );
    }

    #[test]
    fn memo_shares_containers() {
        // A list memoized (q1) under key a, fetched again (h1) for key b, then appended to:
        // both views see it.
        let bytes = b"\x80\x02}(U\x01a]q\x01U\x01bh\x01uh\x01K\x07a0.";
        let v = load(bytes).unwrap();
        let (Some(Value::List(x)), Some(Value::List(y))) = (v.get("a"), v.get("b")) else {
            panic!("{v:?}")
        };
        assert_eq!(x.borrow().len(), 1);
        assert!(Rc::ptr_eq(&x, &y));
    }

    #[test]
    fn self_containing_and_deep_values_are_refused() {
        // Found by fuzz/pickle_batch: a list appended to itself leaked (an Rc cycle).
        let cases: [(&[u8], &str); 4] = [
            (b"\x80\x02]q\x00h\x00a.", "a list inside a list"),
            (b"\x80\x02}q\x00h\x00(h\x00h\x00u.", "a dict inside a dict"),
            (b"\x80\x02]q\x00h\x00\x85a.", "a list inside a tuple"),
            (b"\x80\x02cm\nf\n]\x85R.", "a list inside a tuple"),
        ];
        for (bytes, what) in cases {
            match load(bytes) {
                Err(PickleError::Malformed { what: w, .. }) => assert!(w.contains(what), "{w}"),
                other => panic!("{bytes:?}: {other:?}"),
            }
        }
        let nested = |n: usize| [&b"\x80\x02K\x00"[..], &vec![0x85; n], b"."].concat();
        assert!(load(&nested(MAX_DEPTH as usize)).is_ok());
        match load(&nested(MAX_DEPTH as usize + 1)) {
            Err(PickleError::Malformed { what, .. }) => assert!(what.contains("deeper"), "{what}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_name_the_offset() {
        assert_eq!(
            load(b"\x80\x02}q\x00(U\x05ab").unwrap_err(),
            PickleError::Truncated(10)
        );
        assert_eq!(
            load(b"\x80\x02\xff").unwrap_err(),
            PickleError::UnknownOpcode { op: 0xff, at: 2 }
        );
        assert!(matches!(
            load(b"\x80\x02a."),
            Err(PickleError::Malformed { at: 2, .. })
        ));
        assert!(matches!(
            load(b"\x80\x02\x8a\x10"),
            Err(PickleError::Malformed { .. })
        ));
        assert!(load(b"").is_err());
    }

    /// `pickle.dumps({b'data': np.arange(6, dtype=np.uint8).reshape(2, 3), b'labels': [3, 7]},
    /// protocol=2)` from CPython 3.11 + numpy 2: bytes spelled as `_codecs.encode` calls.
    #[test]
    fn reads_python3_numpy_pickle() {
        let bytes = b"\x80\x02\x7d\x71\x00\x28\x63\x5f\x63\x6f\x64\x65\x63\x73\x0a\x65\x6e\x63\x6f\x64\x65\x0a\x71\x01\x58\x04\x00\x00\x00\x64\x61\x74\x61\x71\x02\x58\x06\x00\x00\x00\x6c\x61\x74\x69\x6e\x31\x71\x03\x86\x71\x04\x52\x71\x05\x63\x6e\x75\x6d\x70\x79\x2e\x5f\x63\x6f\x72\x65\x2e\x6d\x75\x6c\x74\x69\x61\x72\x72\x61\x79\x0a\x5f\x72\x65\x63\x6f\x6e\x73\x74\x72\x75\x63\x74\x0a\x71\x06\x63\x6e\x75\x6d\x70\x79\x0a\x6e\x64\x61\x72\x72\x61\x79\x0a\x71\x07\x4b\x00\x85\x71\x08\x68\x01\x58\x01\x00\x00\x00\x62\x71\x09\x68\x03\x86\x71\x0a\x52\x71\x0b\x87\x71\x0c\x52\x71\x0d\x28\x4b\x01\x4b\x02\x4b\x03\x86\x71\x0e\x63\x6e\x75\x6d\x70\x79\x0a\x64\x74\x79\x70\x65\x0a\x71\x0f\x58\x02\x00\x00\x00\x75\x31\x71\x10\x89\x88\x87\x71\x11\x52\x71\x12\x28\x4b\x03\x58\x01\x00\x00\x00\x7c\x71\x13\x4e\x4e\x4e\x4a\xff\xff\xff\xff\x4a\xff\xff\xff\xff\x4b\x00\x74\x71\x14\x62\x89\x68\x01\x58\x06\x00\x00\x00\x00\x01\x02\x03\x04\x05\x71\x15\x68\x03\x86\x71\x16\x52\x71\x17\x74\x71\x18\x62\x68\x01\x58\x06\x00\x00\x00\x6c\x61\x62\x65\x6c\x73\x71\x19\x68\x03\x86\x71\x1a\x52\x71\x1b\x5d\x71\x1c\x28\x4b\x03\x4b\x07\x65\x75\x2e";
        let v = load(bytes).unwrap();
        let a = as_ndarray(&v.get("data").unwrap()).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.dtype, "u1");
        assert!(!a.fortran_order);
        assert_eq!(a.data.as_slice(), &[0, 1, 2, 3, 4, 5]);
        assert!(matches!(v.get("labels"), Some(Value::List(l)) if l.borrow().len() == 2));
    }
}
