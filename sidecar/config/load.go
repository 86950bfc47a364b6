package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// MaxFileSize caps the configuration file and every file it names.
const MaxFileSize = 4 << 20

// FieldError is one problem in a configuration. Load and Parse return an
// errors.Join of them, sorted by line.
type FieldError struct {
	File string // the configuration file (Load only)
	Line int    // 1-based line in the file; 0 when the value is a default or absent
	Path string // YAML path, e.g. "egress[1].peer"; "" for the file as a whole
	Msg  string
}

func (e *FieldError) Error() string {
	var b strings.Builder
	switch {
	case e.File != "" && e.Line > 0:
		fmt.Fprintf(&b, "%s:%d: ", e.File, e.Line)
	case e.File != "":
		b.WriteString(e.File + ": ")
	case e.Line > 0:
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors returns the *FieldError values in err (as returned by Load or
// Parse), in order.
func Errors(err error) []*FieldError {
	var out []*FieldError
	var walk func(error)
	walk = func(err error) {
		if fe, ok := err.(*FieldError); ok {
			out = append(out, fe)
			return
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
		}
	}
	walk(err)
	return out
}

// Load reads the file at path, parses it strictly, fills in defaults and
// validates it. Relative paths in the file are resolved against the file's
// directory. Every problem found in the file is reported, as an
// errors.Join of *FieldError with File set to path; a file that cannot be
// read at all gives a plain error.
func Load(path string) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	data, err := readLimited(abs)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(data, filepath.Dir(abs))
	if err != nil {
		errs := Errors(err)
		out := make([]error, len(errs))
		for i, e := range errs {
			e.File = path
			out[i] = e
		}
		return nil, errors.Join(out...)
	}
	return c, nil
}

// Parse is Load on data already read; relative paths are resolved against
// baseDir ("" leaves them relative to the working directory).
func Parse(data []byte, baseDir string) (*Config, error) {
	if len(data) > MaxFileSize {
		return nil, errors.Join(&FieldError{Msg: fmt.Sprintf("configuration larger than %d bytes", MaxFileSize)})
	}
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if err == io.EOF {
			return nil, errors.Join(&FieldError{Msg: "the configuration is empty"})
		}
		return nil, errors.Join(syntaxError(err))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		line := extra.Line
		if err != nil {
			return nil, errors.Join(syntaxError(err))
		}
		return nil, errors.Join(&FieldError{Line: line, Msg: "more than one YAML document; the configuration must be a single document"})
	}
	doc := &root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	if doc.Kind != yaml.MappingNode {
		if doc.ShortTag() == "!!null" {
			return nil, errors.Join(&FieldError{Msg: "the configuration is empty"})
		}
		return nil, errors.Join(&FieldError{Line: doc.Line, Msg: fmt.Sprintf("the configuration must be a mapping of sections, not %s", kindName(doc))})
	}

	w := &walker{lines: map[int]string{}, paths: map[string]int{}, nullWords: map[string]bool{}, ignored: map[int]bool{}}
	w.walk(doc, reflect.TypeFor[Config](), "", 0)
	errs := w.errs

	c := &Config{Admin: Admin{Listen: DefaultAdminListen}}
	strict := yaml.NewDecoder(bytes.NewReader(data))
	strict.KnownFields(true)
	if err := strict.Decode(c); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, joinSorted(append(errs, syntaxError(err)))
		}
		reported := map[int]bool{}
		for _, fe := range w.errs {
			reported[fe.Line] = true
		}
		for _, msg := range te.Errors {
			fe := w.typeError(msg)
			if strings.Contains(fe.Msg, " not found in type ") && (reported[fe.Line] || w.ignored[fe.Line]) {
				continue // reported by the walker with its path, or an x- key
			}
			errs = append(errs, fe)
		}
	}

	if w.nullWords["daps.mode"] {
		c.DAPS.Mode = DAPSModeNull // `mode: null` is YAML's null, but means NullDaps
	}
	c.resolvePaths(baseDir)
	c.applyDefaults()
	// Validate even after decoding errors, so that one run reports every
	// problem; a value that could not be decoded is left at its default,
	// so problems found at or under its path are not reported.
	v := &validator{c: c, paths: w.paths}
	v.validate()
	decodeErrs := errs
	for _, ve := range v.errs {
		if !underAny(ve.Path, decodeErrs) {
			errs = append(errs, ve)
		}
	}
	if len(errs) > 0 {
		return nil, joinSorted(errs)
	}
	return c, nil
}

// underAny reports whether path is at or under the path of one of errs.
func underAny(path string, errs []*FieldError) bool {
	for _, e := range errs {
		if e.Path == "" {
			continue
		}
		if path == e.Path || strings.HasPrefix(path, e.Path+".") || strings.HasPrefix(path, e.Path+"[") {
			return true
		}
	}
	return false
}

func joinSorted(errs []*FieldError) error {
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Line < errs[j].Line })
	out := make([]error, len(errs))
	for i, e := range errs {
		out[i] = e
	}
	return errors.Join(out...)
}

var lineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): `)

// syntaxError turns a YAML parser error into a FieldError with its line.
func syntaxError(err error) *FieldError {
	msg := err.Error()
	fe := &FieldError{Msg: msg}
	if m := lineRE.FindStringSubmatch(msg); m != nil {
		fe.Line, _ = strconv.Atoi(m[1])
		fe.Msg = msg[len(m[0]):]
	}
	fe.Msg = strings.TrimPrefix(fe.Msg, "yaml: ")
	return fe
}

// walker checks a YAML node tree against the Config types: it reports
// unknown keys with their full path and line (the decoder's KnownFields
// names only the Go type), and records which line each path is on so that
// decoding and validation errors can name both.
type walker struct {
	errs  []*FieldError
	lines map[int]string // line → the key path on it ("\x00" if several)
	paths map[string]int // key path → line
	// nullWords are string keys written as a plain null (YAML's null
	// literal): `daps.mode: null` means the mode "null".
	nullWords map[string]bool
	// ignored are the lines of top-level "x-" keys.
	ignored map[int]bool
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

const maxDepth = 64

func (w *walker) record(path string, line int) {
	if _, ok := w.paths[path]; !ok {
		w.paths[path] = line
	}
	if p, ok := w.lines[line]; ok && p != path {
		w.lines[line] = "\x00"
	} else {
		w.lines[line] = path
	}
}

func (w *walker) walk(n *yaml.Node, t reflect.Type, path string, depth int) {
	if depth > maxDepth {
		return
	}
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
		depth++
		if depth > maxDepth {
			return
		}
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return // the decoder reports the type mismatch
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind == yaml.ScalarNode && k.Value == "<<" && k.ShortTag() == "!!merge" {
				w.walkMerge(v, t, path, depth+1)
				continue
			}
			key := k.Value
			if path == "" && strings.HasPrefix(key, "x-") && k.Kind == yaml.ScalarNode {
				w.ignored[k.Line] = true // extension key, for anchors
				continue
			}
			p := joinPath(path, key)
			f, ok := fields[key]
			if !ok || k.Kind != yaml.ScalarNode {
				w.errs = append(w.errs, &FieldError{Line: k.Line, Path: p, Msg: unknownKeyMsg(key, path, fields)})
				continue
			}
			w.record(p, k.Line)
			if f.Kind() == reflect.String && v.Kind == yaml.ScalarNode && v.ShortTag() == "!!null" && strings.EqualFold(v.Value, "null") {
				w.nullWords[p] = true
			}
			w.walk(v, f, p, depth+1)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return
		}
		for i, item := range n.Content {
			p := path + "[" + strconv.Itoa(i) + "]"
			if _, ok := w.paths[p]; !ok {
				w.paths[p] = item.Line
			}
			w.walk(item, t.Elem(), p, depth+1)
		}
	}
}

func (w *walker) walkMerge(v *yaml.Node, t reflect.Type, path string, depth int) {
	if depth > maxDepth {
		return
	}
	for v.Kind == yaml.AliasNode && v.Alias != nil {
		v = v.Alias
	}
	if v.Kind == yaml.SequenceNode {
		for _, item := range v.Content {
			w.walkMerge(item, t, path, depth+1)
		}
		return
	}
	w.walk(v, t, path, depth)
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// typeError turns one of the decoder's "line N: ..." messages into a
// FieldError, adding the path of the key on that line when it is unique.
func (w *walker) typeError(msg string) *FieldError {
	fe := &FieldError{Msg: msg}
	if m := lineRE.FindStringSubmatch(msg); m != nil {
		fe.Line, _ = strconv.Atoi(m[1])
		fe.Msg = msg[len(m[0]):]
		if p := w.lines[fe.Line]; p != "\x00" {
			fe.Path = p
		}
	}
	return fe
}

var fieldCache = map[reflect.Type]map[string]reflect.Type{}

// yamlFields maps the yaml keys of struct type t to their field types.
// Config types are fixed, so the cache is filled once per type; it is only
// read concurrently after that (see init).
func yamlFields(t reflect.Type) map[string]reflect.Type {
	if m, ok := fieldCache[t]; ok {
		return m
	}
	m := map[string]reflect.Type{}
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		m[name] = f.Type
	}
	return m
}

func init() {
	// Fill the cache for every configuration type so that Parse only reads it.
	var fill func(t reflect.Type)
	fill = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || reflect.PointerTo(t).Implements(unmarshalerType) {
			return
		}
		if _, ok := fieldCache[t]; ok {
			return
		}
		m := yamlFields(t)
		fieldCache[t] = m
		for _, ft := range m {
			fill(ft)
		}
	}
	fill(reflect.TypeFor[Config]())
}

func unknownKeyMsg(key, parent string, fields map[string]reflect.Type) string {
	where := "at the top level"
	if parent != "" {
		where = "in " + parent
	}
	msg := fmt.Sprintf("unknown key %q %s", key, where)
	names := make([]string, 0, len(fields))
	for n := range fields {
		names = append(names, n)
	}
	sort.Strings(names)
	best, bestD := "", 3
	for _, n := range names {
		if d := distance(strings.ToLower(key), strings.ToLower(n)); d < bestD {
			best, bestD = n, d
		}
	}
	if best != "" {
		return msg + fmt.Sprintf(" (did you mean %q?)", best)
	}
	msg += " (known keys: " + strings.Join(names, ", ")
	if parent == "" {
		msg += "; top-level keys starting with x- are ignored, for YAML anchors"
	}
	return msg + ")"
}

// distance is the Levenshtein distance of a and b (bytes), capped for long
// inputs.
func distance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 99
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := 1
			if a[i-1] == b[j-1] {
				c = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+c)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// readLimited reads a regular file of at most MaxFileSize bytes. Devices,
// FIFOs and directories are refused before they are opened.
func readLimited(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, MaxFileSize)
	}
	return data, nil
}
