//! `emotion-plugin-componentize`: the build step between `cargo build --target
//! wasm32-unknown-unknown` and a plugin the gateway can load.
//!
//! ```text
//! emotion-plugin-componentize list
//!     One line per plugin crate of the workspace: `PACKAGE LIB_NAME PLUGIN_NAME`.
//!     A plugin crate is a package with a `[package.metadata.emotion-plugin]`
//!     table (its `name` key names the component) and a cdylib target.
//! emotion-plugin-componentize componentize IN.wasm OUT.wasm
//!     Core module -> component. Debug sections are dropped (they only make the
//!     gateway's compile slower); the ABI section must survive, or it fails.
//! ```
//!
//! It does what `wasm-tools component new` does, with the `wit-component`
//! crate, so a fresh machine needs nothing but rustup and cargo.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use serde_json::Value;

/// The custom section the SDK's `export_plugin!` writes (see emotion-plugin-sdk).
const ABI_SECTION: &str = "emotion-plugin-abi";

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("usage: emotion-plugin-componentize list | componentize IN.wasm OUT.wasm")]
    Usage,
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid core WebAssembly module: {message}")]
    BadModule { path: PathBuf, message: String },
    #[error("componentizing {path} failed: {message:#}")]
    Encode { path: PathBuf, message: String },
    #[error(
        "{path} carries no `{ABI_SECTION}` section: did the crate call `emotion_plugin_sdk::export_plugin!`?"
    )]
    NoAbi { path: PathBuf },
    #[error("`cargo metadata` failed: {0}")]
    Metadata(String),
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["list"] => list(),
        ["componentize", input, output] => componentize(Path::new(input), Path::new(output)),
        _ => Err(Error::Usage),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("emotion-plugin-componentize: {e}");
            ExitCode::FAILURE
        }
    }
}

fn list() -> Result<(), Error> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .map_err(|e| Error::Metadata(e.to_string()))?;
    if !out.status.success() {
        return Err(Error::Metadata(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    let meta: Value =
        serde_json::from_slice(&out.stdout).map_err(|e| Error::Metadata(e.to_string()))?;
    let packages = meta
        .get("packages")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::Metadata("no `packages` in the output".into()))?;
    let mut rows = Vec::new();
    for p in packages {
        let Some(plugin) = p.pointer("/metadata/emotion-plugin") else {
            continue;
        };
        let package = p.get("name").and_then(Value::as_str).unwrap_or_default();
        let name = plugin.get("name").and_then(Value::as_str).ok_or_else(|| {
            Error::Metadata(format!(
                "package `{package}`: [package.metadata.emotion-plugin] needs a `name`"
            ))
        })?;
        let lib = p
            .get("targets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|t| {
                t.get("crate_types")
                    .and_then(Value::as_array)
                    .is_some_and(|k| k.iter().any(|k| k == "cdylib"))
            })
            .and_then(|t| t.get("name").and_then(Value::as_str))
            .ok_or_else(|| {
                Error::Metadata(format!(
                    "package `{package}` is marked as a plugin but has no cdylib target"
                ))
            })?;
        rows.push(format!("{package} {} {name}", lib.replace('-', "_")));
    }
    rows.sort();
    for r in rows {
        println!("{r}");
    }
    Ok(())
}

fn componentize(input: &Path, output: &Path) -> Result<(), Error> {
    let bytes = std::fs::read(input).map_err(|source| Error::Read {
        path: input.into(),
        source,
    })?;
    let module = strip_debug_sections(&bytes).map_err(|message| Error::BadModule {
        path: input.into(),
        message,
    })?;
    let component = wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .and_then(|e| e.encode())
        .map_err(|e| Error::Encode {
            path: input.into(),
            message: format!("{e:#}"),
        })?;
    if !has_abi_section(&component) {
        return Err(Error::NoAbi { path: input.into() });
    }
    if let Some(dir) = output.parent() {
        std::fs::create_dir_all(dir).map_err(|source| Error::Write {
            path: dir.into(),
            source,
        })?;
    }
    // Write then rename: a gateway watching the directory never sees half a file.
    let tmp = output.with_extension("wasm.tmp");
    std::fs::write(&tmp, &component)
        .and_then(|()| std::fs::rename(&tmp, output))
        .map_err(|source| Error::Write {
            path: output.into(),
            source,
        })?;
    println!(
        "{} -> {} ({} KiB)",
        input.display(),
        output.display(),
        component.len() / 1024
    );
    Ok(())
}

/// Copy a core module section by section, leaving out DWARF (`.debug_*`).
fn strip_debug_sections(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut module = wasm_encoder::Module::new();
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| e.to_string())?;
        if let wasmparser::Payload::Version { encoding, .. } = &payload
            && *encoding != wasmparser::Encoding::Module
        {
            return Err("it is already a component (or not a module)".into());
        }
        if let wasmparser::Payload::CustomSection(c) = &payload
            && c.name().starts_with(".debug")
        {
            continue;
        }
        if let Some((id, range)) = payload.as_section() {
            let data = usize::try_from(range.start)
                .ok()
                .zip(usize::try_from(range.end).ok())
                .and_then(|(start, end)| bytes.get(start..end))
                .ok_or("section range out of bounds")?;
            module.section(&wasm_encoder::RawSection { id, data });
        }
    }
    Ok(module.finish())
}

/// Whether any module nested in the component has the ABI section.
fn has_abi_section(component: &[u8]) -> bool {
    wasmparser::Parser::new(0)
        .parse_all(component)
        .filter_map(Result::ok)
        .any(|p| matches!(p, wasmparser::Payload::CustomSection(c) if c.name() == ABI_SECTION))
}
