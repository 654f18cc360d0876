// Package version holds the build's version string, set by the linker
// (-X github.com/starling-edge/starling/shared/version.Version=...).
package version

// Version is the release this binary was built from; "dev" for local builds.
var Version = "dev"
