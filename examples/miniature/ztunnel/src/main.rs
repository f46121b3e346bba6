//! Miniature of istio/ztunnel: prints its version, as `ztunnel version` does.
fn main() {
    let arg = std::env::args().nth(1).unwrap_or_default();
    if arg == "version" || arg == "--version" {
        println!("ztunnel version {} ({})", env!("CARGO_PKG_VERSION"), std::env::consts::ARCH);
        return;
    }
    println!("ztunnel (istiobuild example): nothing to proxy");
}
