//! An image's index or manifest, as the shim reads it from containerd's
//! content store (any registry's bytes): parsed, the entry to follow
//! chosen, the Wasm layer found and its size and digest checked, or the
//! image refused with a reason.
#![no_main]

use executor::image::{
    check_size, parse_index, parse_manifest, select_manifest, sha256_of, wasm_layer,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = parse_index(data)
        && let Some(entry) = select_manifest(&index)
    {
        assert!(index.manifests.contains(entry));
        let _ = sha256_of(&entry.digest);
    }
    if let Ok(manifest) = parse_manifest(data)
        && let Ok(Some(layer)) = wasm_layer(&manifest)
    {
        assert!(manifest.layers.contains(layer));
        let _ = check_size(layer, 1 << 30);
        let _ = sha256_of(&layer.digest);
    }
});
