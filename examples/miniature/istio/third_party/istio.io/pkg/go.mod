module istio.io/pkg

go 1.19
