//! uniffi's `uniffi-bindgen` command, built from the same uniffi version as the library so
//! that the generated bindings match it: `generate --library target/.../libvrs_mobile.so
//! --language kotlin --out-dir ...`.

fn main() {
    uniffi::uniffi_bindgen_main()
}
