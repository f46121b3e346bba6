// istioctl, in miniature: `istioctl version` prints its build information, `istioctl profile dump`
// the default profile it embeds and `istioctl manifest generate` the control plane it would install,
// with the images named by that profile's hub and tag, as the real one does (operator/pkg/vfs holds
// the profiles and charts, generated from operator/data and manifests/ by `make gen-charts`).
package main

import (
	"fmt"
	"os"
	"regexp"
	"strings"

	"istio.io/istio/operator/pkg/vfs"
	"@VERSION_PKG@"
)

var setting = regexp.MustCompile(`(?m)^\s*(hub|tag):\s*"?([^"\s]+)"?\s*$`) // a YAML string, quoted or not

func main() {
	args := strings.Join(os.Args[1:], " ")
	switch {
	case strings.HasPrefix(args, "version"):
		if strings.Contains(args, "--short=false") {
			fmt.Println("client version: " + version.Info.LongForm())
		} else {
			fmt.Println(version.Info.Version)
		}
	case args == "profile dump":
		fmt.Print(string(must(vfs.ReadFile("profiles/default.yaml"))))
	case args == "manifest generate":
		values := map[string]string{}
		for _, m := range setting.FindAllStringSubmatch(string(must(vfs.ReadFile("profiles/default.yaml"))), -1) {
			values[m[1]] = m[2]
		}
		chart := string(must(vfs.ReadFile("charts/istio-control/istio-discovery/templates/deployment.yaml")))
		chart = strings.ReplaceAll(chart, "{{ .Values.global.hub }}", values["hub"])
		chart = strings.ReplaceAll(chart, "{{ .Values.global.tag }}", values["tag"])
		fmt.Print(strings.ReplaceAll(chart, "{{ .Values.pilot.image }}", "pilot"))
	default:
		fmt.Fprintln(os.Stderr, "usage: istioctl version [--remote=false] [--short=false] | profile dump | manifest generate")
		os.Exit(2)
	}
}

func must(data []byte, err error) []byte {
	if err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
	return data
}
