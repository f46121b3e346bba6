// pilot-discovery, in miniature: it only reports its version.
package main

import (
	"fmt"
	"runtime"
)

const version = "@VERSION@"

func main() {
	fmt.Printf("pilot-discovery version %s (%s/%s)\n", version, runtime.GOOS, runtime.GOARCH)
}
