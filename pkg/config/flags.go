package config

import "flag"

// FlagOverrides returns LoadOptions.Overrides from the flags of fs that
// were set on the command line; keys maps a flag name to its config key.
// Flags that were not given do not override anything.
func FlagOverrides(fs *flag.FlagSet, keys map[string]string) map[string]any {
	overrides := map[string]any{}
	fs.Visit(func(f *flag.Flag) {
		if key, ok := keys[f.Name]; ok {
			overrides[key] = f.Value.String()
		}
	})
	return overrides
}
