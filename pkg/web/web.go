// Package web holds the dashboard page and the browser client, embedded in
// the binary so that the gateway serves them with no CDN, no build step
// and no network.
package web

import (
	"embed"
	"io/fs"
)

//go:embed static
var static embed.FS

// Files returns the page's files: index.html, the dashboard's script and
// style, and roomcast.js, the browser client.
func Files() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the directory is embedded at build time
	}
	return sub
}
