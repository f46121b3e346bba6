// istioctl, in miniature, as from 1.24: `istioctl version` prints its build information and
// `istioctl manifest generate` the control plane it would install. The charts and profiles come from
// manifests/ through go:embed; the hub and tag are the default profile's, overlaid with the ones
// istioctl was built with when it knows them (operator/pkg/render/manifest.go hubTagOverlay).
// There is no `istioctl profile dump` any more.
package main

import (
	"fmt"
	"os"
	"regexp"
	"strings"

	"istio.io/istio/manifests"
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
	case args == "manifest generate":
		values := map[string]string{}
		for _, m := range setting.FindAllStringSubmatch(string(must(manifests.FS.ReadFile("profiles/default.yaml"))), -1) {
			values[m[1]] = m[2]
		}
		if version.DockerInfo.Hub != "unknown" && version.DockerInfo.Tag != "unknown" {
			values["hub"], values["tag"] = version.DockerInfo.Hub, version.DockerInfo.Tag
		}
		chart := string(must(manifests.FS.ReadFile("charts/istio-control/istio-discovery/templates/deployment.yaml")))
		chart = strings.ReplaceAll(chart, "{{ .Values.global.hub }}", values["hub"])
		chart = strings.ReplaceAll(chart, "{{ .Values.global.tag }}", values["tag"])
		fmt.Print(strings.ReplaceAll(chart, "{{ .Values.pilot.image }}", "pilot"))
	default:
		fmt.Fprintln(os.Stderr, "usage: istioctl version [--remote=false] [--short=false] | manifest generate")
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
