//! Compresses one layer of the real SmolLM2-135M KV sample with libpackkv and prints the
//! compression ratio (fp16 bytes / all-in bytes = compressed_bytes_used + residual_bytes).
//!
//! Usage: packkv-example [path/to/smollm2_kv_sample.safetensors] [layer]   (default layer 15)
//!
//! The file is read with a minimal safetensors reader written here (no external crates): an
//! 8-byte little-endian header length, a JSON header mapping tensor names to
//! {"dtype", "shape", "data_offsets"}, then the raw little-endian tensor bytes.
use std::collections::BTreeMap;
use std::process::ExitCode;

use packkv::{Cache, Params, F16};

/// A JSON value; only what the safetensors header needs (the payloads of booleans and of
/// `__metadata__` strings are parsed but not read).
#[derive(Debug)]
#[allow(dead_code)]
enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(BTreeMap<String, Json>),
}

/// A small recursive-descent JSON parser (strings with the common escapes; numbers as f64).
struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> Result<(), String> {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected '{}' at byte {}", c as char, self.i))
        }
    }
    fn value(&mut self) -> Result<Json, String> {
        self.ws();
        match self.s.get(self.i).copied() {
            Some(b'{') => {
                self.i += 1;
                let mut m = BTreeMap::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(m));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    self.eat(b':')?;
                    m.insert(k, self.value()?);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Json::Obj(m));
                        }
                        _ => return Err(format!("bad object at byte {}", self.i)),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut v = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Json::Arr(v));
                }
                loop {
                    v.push(self.value()?);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Arr(v));
                        }
                        _ => return Err(format!("bad array at byte {}", self.i)),
                    }
                }
            }
            Some(b'"') => Ok(Json::Str(self.string()?)),
            Some(b't') if self.s[self.i..].starts_with(b"true") => {
                self.i += 4;
                Ok(Json::Bool(true))
            }
            Some(b'f') if self.s[self.i..].starts_with(b"false") => {
                self.i += 5;
                Ok(Json::Bool(false))
            }
            Some(b'n') if self.s[self.i..].starts_with(b"null") => {
                self.i += 4;
                Ok(Json::Null)
            }
            Some(_) => {
                let start = self.i;
                while self.i < self.s.len() && b"+-.eE0123456789".contains(&self.s[self.i]) {
                    self.i += 1;
                }
                std::str::from_utf8(&self.s[start..self.i])
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .map(Json::Num)
                    .ok_or_else(|| format!("bad value at byte {start}"))
            }
            None => Err("unexpected end of JSON".into()),
        }
    }
    fn string(&mut self) -> Result<String, String> {
        if self.s.get(self.i) != Some(&b'"') {
            return Err(format!("expected a string at byte {}", self.i));
        }
        self.i += 1;
        let mut out = Vec::new();
        while let Some(&c) = self.s.get(self.i) {
            self.i += 1;
            match c {
                b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                b'\\' => {
                    let e = *self.s.get(self.i).ok_or("bad escape")?;
                    self.i += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'u' => {
                            let hex = std::str::from_utf8(self.s.get(self.i..self.i + 4).ok_or("bad \\u")?)
                                .map_err(|e| e.to_string())?;
                            let cp = u32::from_str_radix(hex, 16).map_err(|e| e.to_string())?;
                            self.i += 4;
                            let ch = char::from_u32(cp).unwrap_or('\u{fffd}');
                            out.extend_from_slice(ch.to_string().as_bytes());
                        }
                        other => out.push(other), // \" \\ \/
                    }
                }
                _ => out.push(c),
            }
        }
        Err("unterminated string".into())
    }
}

/// One tensor of a safetensors file: dtype name, shape and its bytes.
struct Tensor<'a> {
    dtype: String,
    shape: Vec<usize>,
    bytes: &'a [u8],
}

fn tensor<'a>(file: &'a [u8], header: &Json, data_start: usize, name: &str) -> Result<Tensor<'a>, String> {
    // (match, not let-else: the crates build with Debian 12's rustc 1.63)
    let h = match header {
        Json::Obj(h) => h,
        _ => return Err("header is not an object".into()),
    };
    let t = match h.get(name) {
        Some(Json::Obj(t)) => t,
        _ => return Err(format!("no tensor '{name}'")),
    };
    let nums = |key: &str| -> Result<Vec<usize>, String> {
        match t.get(key) {
            Some(Json::Arr(v)) => v
                .iter()
                .map(|x| match x {
                    Json::Num(n) if *n >= 0.0 => Ok(*n as usize),
                    _ => Err(format!("{name}.{key}: not a list of sizes")),
                })
                .collect(),
            _ => Err(format!("{name}: missing {key}")),
        }
    };
    let dtype = match t.get("dtype") {
        Some(Json::Str(dtype)) => dtype,
        _ => return Err(format!("{name}: no dtype")),
    };
    let offs = nums("data_offsets")?;
    let (a, b) = (data_start + offs[0], data_start + offs[1]);
    let bytes = file.get(a..b).ok_or(format!("{name}: data out of the file"))?;
    Ok(Tensor { dtype: dtype.clone(), shape: nums("shape")?, bytes })
}

fn f16_values(t: &Tensor) -> Result<Vec<F16>, String> {
    if t.dtype != "F16" {
        return Err(format!("expected F16, got {}", t.dtype));
    }
    Ok(t.bytes.chunks_exact(2).map(|c| F16(u16::from_le_bytes([c[0], c[1]]))).collect())
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).cloned().unwrap_or_else(|| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/smollm2_kv_sample.safetensors").into()
    });
    let layer: usize = args.get(2).map(|s| s.parse().map_err(|_| "bad layer")).transpose()?.unwrap_or(15);

    let file = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
    let n = u64::from_le_bytes(file.get(..8).ok_or("file too short")?.try_into().unwrap()) as usize;
    let header_bytes = file.get(8..8 + n).ok_or("header out of the file")?;
    let header = Parser { s: header_bytes, i: 0 }.value()?;
    let k = tensor(&file, &header, 8 + n, &format!("layer.{layer}.k"))?;
    let v = tensor(&file, &header, 8 + n, &format!("layer.{layer}.v"))?;
    let (t, h, d) = match k.shape[..] {
        [t, h, d] => (t, h, d),
        _ => return Err(format!("unexpected K shape {:?}", k.shape)),
    };
    println!("libpackkv {}: layer {layer}, K/V {} {:?}", packkv::version_string(), k.dtype, k.shape);

    let mut params = Params::default();
    params.device = -1;
    params.n_kv_heads = h as i32;
    params.head_dim = d as i32;
    let mut cache = Cache::new(&params).map_err(|e| e.to_string())?;
    cache
        .append(&[0], &[t as i32], &f16_values(&k)?, &f16_values(&v)?)
        .map_err(|e| e.to_string())?;
    let st = cache.stats(None).map_err(|e| e.to_string())?;
    println!(
        "tokens {} (compressed {}, residual {}), bits K/V {}/{}",
        st.n_tokens,
        st.n_compressed_tokens,
        st.n_residual_tokens,
        cache.params().bits_k,
        cache.params().bits_v
    );
    println!(
        "fp16 {} bytes, all-in {} bytes (compressed {} + residual {})",
        st.fp16_bytes,
        st.all_in_bytes(),
        st.compressed_bytes_used,
        st.residual_bytes
    );
    println!("ratio {:.2}x", st.ratio());
    if st.ratio() <= 1.0 {
        return Err("no compression".into());
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("packkv-example: {e}");
            ExitCode::FAILURE
        }
    }
}
