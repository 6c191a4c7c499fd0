//go:build !unix

package producer

import "os/exec"

// ownGroup: without process groups only the command itself is killed on
// timeout (exec.CommandContext's default).
func ownGroup(*exec.Cmd) {}
