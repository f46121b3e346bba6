// Package version, in miniature: istio.io/istio/pkg/version (istio.io/pkg/version until 1.18), the build information
// every istio binary reports. gobuild.sh sets the variables below with -X
// ldflags (from BUILDINFO, or from report_build_info.sh).
package version

import (
	"fmt"
	"runtime"
)

// The following fields are populated at build time using -ldflags -X.
var (
	buildVersion     = "unknown"
	buildGitRevision = "unknown"
	buildStatus      = "unknown"
	buildTag         = "unknown"
	buildHub         = "unknown"
)

// BuildInfo describes version information about the binary build.
type BuildInfo struct {
	Version       string `json:"version"`
	GitRevision   string `json:"revision"`
	GolangVersion string `json:"golang_version"`
	BuildStatus   string `json:"status"`
	GitTag        string `json:"tag"`
}

// DockerBuildInfo: the hub and tag istioctl installs by default.
type DockerBuildInfo struct {
	Hub string
	Tag string
}

var (
	// Info exports the build version information.
	Info       BuildInfo
	DockerInfo DockerBuildInfo
)

// LongForm returns a dump of the Info struct (what `<binary> version` prints):
// version.BuildInfo{Version:"...", GitRevision:"...", GolangVersion:"...", BuildStatus:"...", GitTag:"..."}
func (b BuildInfo) LongForm() string {
	return fmt.Sprintf("%#v", b)
}

func init() {
	Info = BuildInfo{
		Version:       buildVersion,
		GitRevision:   buildGitRevision,
		GolangVersion: runtime.Version(),
		BuildStatus:   buildStatus,
		GitTag:        buildTag,
	}
	DockerInfo = DockerBuildInfo{Hub: buildHub, Tag: buildVersion}
}
