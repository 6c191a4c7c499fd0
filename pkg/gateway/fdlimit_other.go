//go:build !linux && !darwin

package gateway

// raiseFDLimit does nothing here: the limit is unknown (0), and the
// connection budget comes from the configuration alone.
func raiseFDLimit() (uint64, error) { return 0, nil }
