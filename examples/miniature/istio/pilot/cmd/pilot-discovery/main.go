// pilot-discovery, in miniature: `pilot-discovery version` prints its build
// information, as the real one does (@VERSION_PKG@'s version command).
package main

import (
	"fmt"
	"os"
	"runtime"

	"@VERSION_PKG@"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "version" {
		fmt.Println(version.Info.LongForm())
		return
	}
	fmt.Printf("pilot-discovery %s (%s/%s): usage: pilot-discovery version\n", version.Info.Version, runtime.GOOS, runtime.GOARCH)
}
