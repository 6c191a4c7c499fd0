//go:build linux || darwin

package gateway

import "syscall"

// raiseFDLimit raises the soft open-file limit to the hard one and returns
// the limit in force. Where the system refuses (macOS above OPEN_MAX), the
// current limit stays.
func raiseFDLimit() (uint64, error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, err
	}
	if r.Cur < r.Max {
		want := syscall.Rlimit{Cur: r.Max, Max: r.Max}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want) == nil {
			r = want
		}
	}
	return r.Cur, nil
}
