package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"reflect"
	"regexp"
	"strings"

	"github.com/spf13/viper"
)

// EnvPrefix starts every environment override: ROOMCAST_ + the key upper-
// cased with "." replaced by "_", e.g. ROOMCAST_NATS_URL for nats.url.
const EnvPrefix = "ROOMCAST_"

// DefaultFile is read when no file is named and it exists.
const DefaultFile = "config.yaml"

// LoadOptions says where configuration comes from.
type LoadOptions struct {
	// File is the config file. If empty, ROOMCAST_CONFIG names it, else
	// config.yaml in the working directory is read if it exists.
	File string
	// Overrides are values from command-line flags, by key; they win over
	// everything else.
	Overrides map[string]any
}

// Load returns the configuration from defaults, the file, the environment
// and the overrides, in rising priority, validated. Errors name the key.
func Load(opts LoadOptions) (Config, error) {
	v := viper.New()
	v.SetConfigType("yaml")

	file, required := opts.File, true
	if file == "" {
		file = os.Getenv(EnvPrefix + "CONFIG")
	}
	if file == "" {
		file, required = DefaultFile, false
	}
	f, err := os.Open(file)
	switch {
	case errors.Is(err, fs.ErrNotExist) && !required:
		file = ""
	case err != nil:
		return Config{}, fmt.Errorf("config: %w", err)
	default:
		err = v.ReadConfig(f)
		f.Close()
		if err != nil {
			return Config{}, fmt.Errorf("config: %s: %w", file, err)
		}
	}

	for _, key := range leafKeys(reflect.TypeOf(Config{}), "") {
		env := EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
		if err := v.BindEnv(key, env); err != nil {
			return Config{}, fmt.Errorf("config: %w", err)
		}
	}
	for key, val := range opts.Overrides {
		v.Set(key, val)
	}

	cfg := Default()
	// A list is replaced, not merged element by element with the default.
	if v.IsSet("producer.rooms") {
		cfg.Producer.Rooms = nil
	}
	if err := v.UnmarshalExact(&cfg); err != nil {
		return Config{}, fmt.Errorf("config%s: %s", inFile(file), decodeProblem(err, v))
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("config%s: %w", inFile(file), err)
	}
	return cfg, nil
}

func inFile(file string) string {
	if file == "" {
		return ""
	}
	return " " + file
}

// leafKeys lists the dotted keys of t's scalar fields. Lists of structs
// (producer.rooms) are one key: they come from the file only.
func leafKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		key := prefix + f.Tag.Get("mapstructure")
		if f.Type.Kind() == reflect.Struct && f.Type.String() != "time.Duration" {
			keys = append(keys, leafKeys(f.Type, key+".")...)
			continue
		}
		keys = append(keys, key)
	}
	return keys
}

var (
	invalidKeys = regexp.MustCompile(`'([^']*)' has invalid keys: (.*)`)
	decodingKey = regexp.MustCompile(`'([^']+)'[:]? (.*)`)
)

// decodeProblem rewrites mapstructure's errors so that each line names the
// key, the problem and the value given, and nothing else.
func decodeProblem(err error, v *viper.Viper) string {
	var lines []string
	for _, line := range strings.Split(err.Error(), "\n") {
		line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "*"))
		if m := invalidKeys.FindStringSubmatch(line); m != nil {
			for _, k := range strings.Split(m[2], ", ") {
				if m[1] != "" {
					k = m[1] + "." + k
				}
				lines = append(lines, fmt.Sprintf("unknown key %q", k))
			}
			continue
		}
		if m := decodingKey.FindStringSubmatch(line); m != nil {
			problem := strings.TrimPrefix(m[2], "time: ")
			if val := v.Get(m[1]); val != nil {
				problem += fmt.Sprintf(" %q", fmt.Sprint(val))
			}
			lines = append(lines, m[1]+": "+problem)
		}
	}
	if len(lines) == 0 {
		return err.Error()
	}
	return strings.Join(lines, "; ")
}
