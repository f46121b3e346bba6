module istio.io/istio

go 1.19

require istio.io/pkg v0.0.0-00010101000000-000000000000

// istio.io/pkg in miniature (upstream: a module of its own, from the proxy)
replace istio.io/pkg => ./third_party/istio.io/pkg
