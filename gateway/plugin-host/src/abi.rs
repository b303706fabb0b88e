//! The stamps a plugin carries outside its WIT interface, read from a
//! component's bytes before anything is compiled or instantiated: the ABI
//! version and, optionally, the plugin's memory need.
//!
//! The SDK's `export_plugin!` writes a custom section named
//! [`ABI_SECTION`] (4 bytes, little-endian `u32`) into the plugin's core
//! module, and with `memory = "…"` a section named [`MEMORY_SECTION`]
//! (8 bytes, little-endian `u64`: bytes of linear memory the plugin needs);
//! `wit-component` keeps both when it wraps the module into a component, so
//! they sit in the component's nested module. Custom sections are not part
//! of the WIT contract: declaring a need does not change the ABI version.
//!
//! The host dispatches on the ABI version: each supported one has its own
//! bindings (`wit` and `wit::abi1`) and its own way of turning answers into
//! events (`convert`).

/// The custom section holding the ABI version.
pub const ABI_SECTION: &str = "emotion-plugin-abi";

/// The custom section holding the declared memory need.
pub const MEMORY_SECTION: &str = "emotion-plugin-memory";

/// ABI 1: WIT package `emotion:plugin@0.1.0` (`sdk-plugin/wit-abi1`), still
/// loaded.
pub const ABI_1: u32 = 1;

/// ABI 2: WIT package `emotion:plugin@0.2.0` (`sdk-plugin/wit`), what the SDK
/// builds: labels as an enum, extra fields as one JSON object text.
pub const ABI_2: u32 = 2;

/// The newest ABI, the one `sdk-plugin` stamps.
pub const CURRENT_ABI: u32 = ABI_2;

/// Every ABI version this host loads; a component stamped with another is
/// refused before it is compiled.
pub const SUPPORTED_ABIS: [u32; 2] = [ABI_1, ABI_2];

/// Why no ABI version could be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AbiError {
    #[error("not a WebAssembly binary: {0}")]
    NotWasm(String),
    #[error(
        "a core WebAssembly module, not a component: build plugins with scripts/build-plugins.sh, which componentizes them"
    )]
    CoreModule,
    #[error(
        "no `{ABI_SECTION}` section: not built with emotion-plugin-sdk's export_plugin! (or with another SDK)"
    )]
    Missing,
    #[error("the `{ABI_SECTION}` section holds {0} bytes, expected 4")]
    Malformed(usize),
    #[error("the component carries several different ABI versions: {0:?}")]
    Conflicting(Vec<u32>),
    #[error(
        "the `{MEMORY_SECTION}` section holds {0} bytes, expected 8 (a little-endian u64: bytes of memory the plugin needs)"
    )]
    MemoryMalformed(usize),
    #[error("the component declares several different memory needs: {0:?} bytes")]
    MemoryConflicting(Vec<u64>),
}

/// What a component declares in its custom sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamps {
    pub abi_version: u32,
    /// Bytes of linear memory the plugin says it needs, if it says.
    pub memory_need: Option<u64>,
}

/// Read the ABI version stamped into a component. A malformed memory
/// section does not matter here (see [`read_stamps`]).
pub fn read_abi_version(component: &[u8]) -> Result<u32, AbiError> {
    scan(component, false).map(|s| s.abi_version)
}

/// Read the ABI version and the declared memory need of a component.
pub fn read_stamps(component: &[u8]) -> Result<Stamps, AbiError> {
    scan(component, true)
}

fn scan(component: &[u8], with_memory: bool) -> Result<Stamps, AbiError> {
    let mut abi: Vec<u32> = Vec::new();
    let mut memory: Vec<u64> = Vec::new();
    let mut first = true;
    for payload in wasmparser::Parser::new(0).parse_all(component) {
        let payload = payload.map_err(|e| AbiError::NotWasm(e.to_string()))?;
        match payload {
            wasmparser::Payload::Version { encoding, .. } if first => {
                first = false;
                if encoding != wasmparser::Encoding::Component {
                    return Err(AbiError::CoreModule);
                }
            }
            wasmparser::Payload::CustomSection(c) if c.name() == ABI_SECTION => {
                let data = c.data();
                let bytes =
                    <[u8; 4]>::try_from(data).map_err(|_| AbiError::Malformed(data.len()))?;
                let v = u32::from_le_bytes(bytes);
                if !abi.contains(&v) {
                    abi.push(v);
                }
            }
            wasmparser::Payload::CustomSection(c) if with_memory && c.name() == MEMORY_SECTION => {
                let data = c.data();
                let bytes =
                    <[u8; 8]>::try_from(data).map_err(|_| AbiError::MemoryMalformed(data.len()))?;
                let v = u64::from_le_bytes(bytes);
                if !memory.contains(&v) {
                    memory.push(v);
                }
            }
            _ => {}
        }
    }
    let abi_version = match abi[..] {
        [] => return Err(AbiError::Missing),
        [v] => v,
        _ => return Err(AbiError::Conflicting(abi)),
    };
    let memory_need = match memory[..] {
        [] => None,
        [v] => Some(v),
        _ => return Err(AbiError::MemoryConflicting(memory)),
    };
    Ok(Stamps {
        abi_version,
        memory_need,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_core_modules_are_refused() {
        assert!(matches!(
            read_abi_version(b"hello"),
            Err(AbiError::NotWasm(_))
        ));
        // The smallest core module: magic + version 1.
        assert_eq!(
            read_abi_version(b"\0asm\x01\0\0\0"),
            Err(AbiError::CoreModule)
        );
        // The smallest component: magic + component version/layer.
        assert_eq!(
            read_abi_version(b"\0asm\x0d\0\x01\0"),
            Err(AbiError::Missing)
        );
    }

    /// A component of nothing but custom sections (`(name, data)`).
    fn component_with(sections: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = b"\0asm\x0d\0\x01\0".to_vec();
        for (name, data) in sections {
            let name_len = u8::try_from(name.len()).expect("short name");
            let size = u8::try_from(1 + name.len() + data.len()).expect("short section");
            out.extend([0, size, name_len]);
            out.extend(name.as_bytes());
            out.extend(*data);
        }
        out
    }

    #[test]
    fn memory_need_is_read_next_to_the_abi_version() {
        let abi = 1u32.to_le_bytes();
        let need = (256u64 << 20).to_le_bytes();
        let c = component_with(&[(ABI_SECTION, &abi), (MEMORY_SECTION, &need)]);
        assert_eq!(
            read_stamps(&c),
            Ok(Stamps {
                abi_version: 1,
                memory_need: Some(256 << 20)
            })
        );
        let c = component_with(&[(ABI_SECTION, &abi)]);
        assert_eq!(read_stamps(&c).map(|s| s.memory_need), Ok(None));
        // The same need twice (two nested modules) is one need.
        let c = component_with(&[
            (MEMORY_SECTION, &need),
            (ABI_SECTION, &abi),
            (MEMORY_SECTION, &need),
        ]);
        assert_eq!(read_stamps(&c).map(|s| s.memory_need), Ok(Some(256 << 20)));
    }

    #[test]
    fn malformed_or_conflicting_memory_needs_are_refused() {
        let abi = 1u32.to_le_bytes();
        let c = component_with(&[(ABI_SECTION, &abi), (MEMORY_SECTION, &[1, 2, 3, 4])]);
        assert_eq!(read_stamps(&c), Err(AbiError::MemoryMalformed(4)));
        // The ABI version alone can still be read.
        assert_eq!(read_abi_version(&c), Ok(1));
        let a = (64u64 << 20).to_le_bytes();
        let b = (128u64 << 20).to_le_bytes();
        let c = component_with(&[
            (ABI_SECTION, &abi),
            (MEMORY_SECTION, &a),
            (MEMORY_SECTION, &b),
        ]);
        assert_eq!(
            read_stamps(&c),
            Err(AbiError::MemoryConflicting(vec![64 << 20, 128 << 20]))
        );
        let text = AbiError::MemoryMalformed(4).to_string();
        assert!(
            text.contains("emotion-plugin-memory") && text.contains("expected 8"),
            "{text}"
        );
    }
}
