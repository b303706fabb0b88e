//! The ABI version stamp, read from a component's bytes before anything is
//! compiled or instantiated.
//!
//! The SDK's `export_plugin!` writes a custom section named
//! [`ABI_SECTION`] (4 bytes, little-endian `u32`) into the plugin's core
//! module; `wit-component` keeps it when it wraps the module into a
//! component, so it sits in the component's nested module.

/// The custom section holding the ABI version.
pub const ABI_SECTION: &str = "emotion-plugin-abi";

/// The ABI version this host speaks: WIT package `emotion:plugin@0.1.0`.
pub const SUPPORTED_ABI: u32 = 1;

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
}

/// Read the ABI version stamped into a component.
pub fn read_abi_version(component: &[u8]) -> Result<u32, AbiError> {
    let mut found: Vec<u32> = Vec::new();
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
                if !found.contains(&v) {
                    found.push(v);
                }
            }
            _ => {}
        }
    }
    match found[..] {
        [] => Err(AbiError::Missing),
        [v] => Ok(v),
        _ => Err(AbiError::Conflicting(found)),
    }
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
}
