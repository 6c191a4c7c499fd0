package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
)

// Text is a title, label or unit: either one string for every language or
// a map by language tag ({"zh":"销售额","en":"Sales"}). On the wire a
// plain string stays a plain string, so entries written before languages
// existed keep their meaning and their bytes. In Go a plain string is the
// map with the single key "" (see Plain), so the zero value is "no text".
type Text map[string]string

// MaxLanguages bounds the languages of one Text.
const MaxLanguages = 16

// langTag is a BCP 47-ish tag: "zh", "en", "zh-TW", "pt-BR". Kept strict
// so that a key can never be confused with anything but a language.
var langTag = regexp.MustCompile(`^[a-z]{2,3}(-[A-Za-z0-9]{2,8}){0,2}$`)

// Plain returns a Text with one string for every language.
func Plain(s string) Text {
	if s == "" {
		return nil
	}
	return Text{"": s}
}

// String returns the text for no particular language: the plain string, or
// else English, or else the first language in tag order. It is what logs
// and old clients see.
func (t Text) String() string {
	if s, ok := t[""]; ok {
		return s
	}
	if s, ok := t["en"]; ok {
		return s
	}
	keys := make([]string, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if len(keys) == 0 {
		return ""
	}
	return t[keys[0]]
}

// In returns the text for lang: an exact tag, then its primary language
// ("zh" for "zh-TW"), then String.
func (t Text) In(lang string) string {
	if s, ok := t[lang]; ok {
		return s
	}
	for i := range lang {
		if lang[i] == '-' {
			if s, ok := t[lang[:i]]; ok {
				return s
			}
			break
		}
	}
	return t.String()
}

// MarshalJSON writes a plain text as a JSON string and anything else as an
// object by language.
func (t Text) MarshalJSON() ([]byte, error) {
	if len(t) == 0 {
		return []byte(`""`), nil
	}
	if s, ok := t[""]; ok && len(t) == 1 {
		return json.Marshal(s)
	}
	m := make(map[string]string, len(t))
	for k, v := range t {
		if k != "" { // a mixed Text keeps its languages; "" is implied by String
			m[k] = v
		}
	}
	return json.Marshal(m)
}

// UnmarshalJSON accepts a string or an object of strings by language tag.
func (t *Text) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	switch {
	case len(data) > 0 && data[0] == '"':
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return err
		}
		*t = Plain(s)
		return nil
	case bytes.Equal(data, []byte("null")):
		*t = nil
		return nil
	case len(data) > 0 && data[0] == '{':
		var m map[string]string
		if err := json.Unmarshal(data, &m); err != nil {
			return errors.New("a text by language must map language tags to strings")
		}
		if _, ok := m[""]; ok {
			return errors.New(`a text by language has an empty language tag; use a plain string for "any language"`)
		}
		if len(m) == 0 {
			m = nil // as the empty string: no text
		}
		*t = m
		return nil
	}
	return errors.New("a text must be a string or an object by language")
}

// check validates t as field; required means some text must be there.
func (t Text) check(field string, required bool) error {
	if len(t) > MaxLanguages {
		return fmt.Errorf("%s: %d languages, the limit is %d", field, len(t), MaxLanguages)
	}
	if required && t.String() == "" {
		return fmt.Errorf("%s: required", field)
	}
	for k, v := range t {
		name := field
		if k != "" {
			name = field + "." + k
			if !langTag.MatchString(k) {
				return fmt.Errorf("%s: %q is not a language tag (like zh, en, zh-TW)", field, k)
			}
		}
		if err := checkText(name, v, false); err != nil {
			return err
		}
	}
	return nil
}
