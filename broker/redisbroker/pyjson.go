package redisbroker

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// This file reads JSON as Python's json.loads does and writes values back as
// Python's json.dumps and str() do, so that a message from invenio-sse or
// flask-sse is streamed with the bytes their own views would write:
// json.dumps(json.loads(x)) is not x (separators ", " and ": ", every
// non-ASCII character escaped, floats as Python prints them, NaN and
// Infinity allowed), and an id or type is written with str(), so True is
// "True" and a list is Python's repr of it.

// pyKind is the Python type a JSON value loads as.
type pyKind uint8

const (
	pyNone pyKind = iota
	pyBool
	pyInt
	pyFloat
	pyStr
	pyList
	pyDict
)

// pyValue is a value as json.loads returns it.
type pyValue struct {
	kind pyKind
	b    bool
	num  string  // pyInt: the decimal digits, with "-" when negative
	f    float64 // pyFloat
	s    []rune  // pyStr: may hold lone surrogates, as Python strings may
	list []pyValue
	keys [][]rune // pyDict, in insertion order
	vals []pyValue
}

// Bounds: Python's own parser gives up at about 1000 levels of nesting
// (RecursionError), and since 3.11 on integers over 4300 digits.
const (
	pyMaxDepth     = 1000
	pyMaxIntDigits = 4300
)

var errPyJSON = errors.New("not JSON that Python reads")

// pyLoads parses data as json.loads(data.decode("utf-8")) does.
func pyLoads(data []byte) (pyValue, error) {
	if !utf8.Valid(data) {
		return pyValue{}, fmt.Errorf("%w: not UTF-8", errPyJSON)
	}
	p := pyParser{s: data}
	p.space()
	v, err := p.value(0)
	if err != nil {
		return pyValue{}, err
	}
	p.space()
	if p.i != len(p.s) {
		return pyValue{}, fmt.Errorf("%w: extra data at %d", errPyJSON, p.i)
	}
	return v, nil
}

type pyParser struct {
	s []byte
	i int
}

func (p *pyParser) fail(what string) error {
	return fmt.Errorf("%w: %s at %d", errPyJSON, what, p.i)
}

func (p *pyParser) space() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *pyParser) lit(word string) bool {
	if strings.HasPrefix(string(p.s[p.i:min(len(p.s), p.i+len(word))]), word) {
		p.i += len(word)
		return true
	}
	return false
}

func (p *pyParser) value(depth int) (pyValue, error) {
	if depth > pyMaxDepth {
		return pyValue{}, p.fail("too deep")
	}
	if p.i >= len(p.s) {
		return pyValue{}, p.fail("no value")
	}
	switch c := p.s[p.i]; {
	case c == '{':
		return p.dict(depth)
	case c == '[':
		return p.array(depth)
	case c == '"':
		s, err := p.str()
		return pyValue{kind: pyStr, s: s}, err
	case p.lit("null"):
		return pyValue{kind: pyNone}, nil
	case p.lit("true"):
		return pyValue{kind: pyBool, b: true}, nil
	case p.lit("false"):
		return pyValue{kind: pyBool}, nil
	case p.lit("NaN"):
		return pyValue{kind: pyFloat, f: math.NaN()}, nil
	case p.lit("Infinity"):
		return pyValue{kind: pyFloat, f: math.Inf(1)}, nil
	case p.lit("-Infinity"):
		return pyValue{kind: pyFloat, f: math.Inf(-1)}, nil
	case c == '-' || '0' <= c && c <= '9':
		return p.number()
	}
	return pyValue{}, p.fail("no value")
}

func (p *pyParser) digits() int {
	n := 0
	for p.i < len(p.s) && '0' <= p.s[p.i] && p.s[p.i] <= '9' {
		p.i++
		n++
	}
	return n
}

// number reads -?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?: an int without a
// fraction or exponent, a float otherwise.
func (p *pyParser) number() (pyValue, error) {
	start := p.i
	if p.s[p.i] == '-' {
		p.i++
	}
	intStart := p.i
	if p.digits() == 0 {
		return pyValue{}, p.fail("no digits")
	}
	if p.s[intStart] == '0' && p.i-intStart > 1 {
		// Python reads "01" as 0 followed by extra data.
		return pyValue{}, p.fail("leading zero")
	}
	isFloat := false
	if p.i+1 < len(p.s) && p.s[p.i] == '.' && '0' <= p.s[p.i+1] && p.s[p.i+1] <= '9' {
		p.i++
		p.digits()
		isFloat = true
	}
	if p.i < len(p.s) && (p.s[p.i] == 'e' || p.s[p.i] == 'E') {
		save := p.i
		p.i++
		if p.i < len(p.s) && (p.s[p.i] == '+' || p.s[p.i] == '-') {
			p.i++
		}
		if p.digits() == 0 {
			p.i = save // not part of the number
		} else {
			isFloat = true
		}
	}
	text := string(p.s[start:p.i])
	if !isFloat {
		digits := strings.TrimLeft(strings.TrimPrefix(text, "-"), "0")
		if len(digits) > pyMaxIntDigits {
			return pyValue{}, p.fail("integer too long")
		}
		if digits == "" {
			return pyValue{kind: pyInt, num: "0"}, nil
		}
		if text[0] == '-' {
			digits = "-" + digits
		}
		return pyValue{kind: pyInt, num: digits}, nil
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return pyValue{}, p.fail("bad number")
	}
	// Out of range gives ±Inf, as Python's float() does.
	return pyValue{kind: pyFloat, f: f}, nil
}

func (p *pyParser) hex4() (rune, bool) {
	if p.i+4 > len(p.s) {
		return 0, false
	}
	n, err := strconv.ParseUint(string(p.s[p.i:p.i+4]), 16, 32)
	if err != nil || strings.ContainsAny(string(p.s[p.i:p.i+4]), "+-") {
		return 0, false
	}
	p.i += 4
	return rune(n), true
}

// str reads a string as Python's strict scanner does: no raw control
// characters, and a \u escape of a lone surrogate kept as it is.
func (p *pyParser) str() ([]rune, error) {
	p.i++ // the quote
	var out []rune
	for {
		if p.i >= len(p.s) {
			return nil, p.fail("unterminated string")
		}
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			return out, nil
		case c < 0x20:
			return nil, p.fail("control character in string")
		case c == '\\':
			p.i++
			if p.i >= len(p.s) {
				return nil, p.fail("unterminated string")
			}
			e := p.s[p.i]
			p.i++
			switch e {
			case '"', '\\', '/':
				out = append(out, rune(e))
			case 'b':
				out = append(out, '\b')
			case 'f':
				out = append(out, '\f')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 't':
				out = append(out, '\t')
			case 'u':
				r, ok := p.hex4()
				if !ok {
					return nil, p.fail("bad \\u escape")
				}
				if 0xd800 <= r && r <= 0xdbff && p.i+1 < len(p.s) && p.s[p.i] == '\\' && p.s[p.i+1] == 'u' {
					save := p.i
					p.i += 2
					if lo, ok := p.hex4(); ok && 0xdc00 <= lo && lo <= 0xdfff {
						r = 0x10000 + (r-0xd800)<<10 + (lo - 0xdc00)
					} else {
						p.i = save
					}
				}
				out = append(out, r)
			default:
				return nil, p.fail("bad escape")
			}
		default:
			r, n := utf8.DecodeRune(p.s[p.i:])
			out = append(out, r)
			p.i += n
		}
	}
}

func (p *pyParser) array(depth int) (pyValue, error) {
	p.i++
	v := pyValue{kind: pyList}
	p.space()
	if p.i < len(p.s) && p.s[p.i] == ']' {
		p.i++
		return v, nil
	}
	for {
		p.space()
		e, err := p.value(depth + 1)
		if err != nil {
			return pyValue{}, err
		}
		v.list = append(v.list, e)
		p.space()
		if p.i >= len(p.s) {
			return pyValue{}, p.fail("unterminated array")
		}
		switch p.s[p.i] {
		case ',':
			p.i++
		case ']':
			p.i++
			return v, nil
		default:
			return pyValue{}, p.fail("expected , or ]")
		}
	}
}

// dict reads an object. A repeated key keeps its first place and its last
// value, as dict(pairs) does.
func (p *pyParser) dict(depth int) (pyValue, error) {
	p.i++
	v := pyValue{kind: pyDict}
	p.space()
	if p.i < len(p.s) && p.s[p.i] == '}' {
		p.i++
		return v, nil
	}
	for {
		p.space()
		if p.i >= len(p.s) || p.s[p.i] != '"' {
			return pyValue{}, p.fail("expected a key")
		}
		k, err := p.str()
		if err != nil {
			return pyValue{}, err
		}
		p.space()
		if p.i >= len(p.s) || p.s[p.i] != ':' {
			return pyValue{}, p.fail("expected :")
		}
		p.i++
		p.space()
		e, err := p.value(depth + 1)
		if err != nil {
			return pyValue{}, err
		}
		if j := slices.IndexFunc(v.keys, func(x []rune) bool { return slices.Equal(x, k) }); j >= 0 {
			v.vals[j] = e
		} else {
			v.keys = append(v.keys, k)
			v.vals = append(v.vals, e)
		}
		p.space()
		if p.i >= len(p.s) {
			return pyValue{}, p.fail("unterminated object")
		}
		switch p.s[p.i] {
		case ',':
			p.i++
		case '}':
			p.i++
			return v, nil
		default:
			return pyValue{}, p.fail("expected , or }")
		}
	}
}

// get returns the value of key in a dict.
func (v pyValue) get(key string) (pyValue, bool) {
	for i, k := range v.keys {
		if string(k) == key {
			return v.vals[i], true
		}
	}
	return pyValue{}, false
}

// truthy reports whether Python's bool(v) is true.
func (v pyValue) truthy() bool {
	switch v.kind {
	case pyNone:
		return false
	case pyBool:
		return v.b
	case pyInt:
		return v.num != "0"
	case pyFloat:
		return v.f != 0 // NaN is true
	case pyStr:
		return len(v.s) > 0
	case pyList:
		return len(v.list) > 0
	default:
		return len(v.keys) > 0
	}
}

// appendDumps appends json.dumps(v) with Python's defaults (ensure_ascii,
// separators ", " and ": "), and sort_keys as given.
func appendDumps(dst []byte, v pyValue, sortKeys bool) []byte {
	switch v.kind {
	case pyNone:
		return append(dst, "null"...)
	case pyBool:
		if v.b {
			return append(dst, "true"...)
		}
		return append(dst, "false"...)
	case pyInt:
		return append(dst, v.num...)
	case pyFloat:
		switch {
		case math.IsNaN(v.f):
			return append(dst, "NaN"...)
		case math.IsInf(v.f, 1):
			return append(dst, "Infinity"...)
		case math.IsInf(v.f, -1):
			return append(dst, "-Infinity"...)
		}
		return appendFloatRepr(dst, v.f)
	case pyStr:
		return appendDumpsString(dst, v.s)
	case pyList:
		dst = append(dst, '[')
		for i, e := range v.list {
			if i > 0 {
				dst = append(dst, ", "...)
			}
			dst = appendDumps(dst, e, sortKeys)
		}
		return append(dst, ']')
	}
	order := make([]int, len(v.keys))
	for i := range order {
		order[i] = i
	}
	if sortKeys {
		slices.SortStableFunc(order, func(a, b int) int { return slices.Compare(v.keys[a], v.keys[b]) })
	}
	dst = append(dst, '{')
	for n, i := range order {
		if n > 0 {
			dst = append(dst, ", "...)
		}
		dst = appendDumpsString(dst, v.keys[i])
		dst = append(dst, ": "...)
		dst = appendDumps(dst, v.vals[i], sortKeys)
	}
	return append(dst, '}')
}

const lowerHex = "0123456789abcdef"

func appendU(dst []byte, r rune) []byte {
	return append(dst, '\\', 'u', lowerHex[r>>12&15], lowerHex[r>>8&15], lowerHex[r>>4&15], lowerHex[r&15])
}

// appendDumpsString writes s as json.dumps does with ensure_ascii: only
// printable ASCII stays as it is.
func appendDumpsString(dst []byte, s []rune) []byte {
	dst = append(dst, '"')
	for _, r := range s {
		switch {
		case r == '"':
			dst = append(dst, `\"`...)
		case r == '\\':
			dst = append(dst, `\\`...)
		case r == '\n':
			dst = append(dst, `\n`...)
		case r == '\r':
			dst = append(dst, `\r`...)
		case r == '\t':
			dst = append(dst, `\t`...)
		case r == '\b':
			dst = append(dst, `\b`...)
		case r == '\f':
			dst = append(dst, `\f`...)
		case ' ' <= r && r <= '~':
			dst = append(dst, byte(r))
		case r > 0xffff:
			r -= 0x10000
			dst = appendU(dst, 0xd800+r>>10)
			dst = appendU(dst, 0xdc00+r&0x3ff)
		default:
			dst = appendU(dst, r)
		}
	}
	return append(dst, '"')
}

// appendFloatRepr writes a finite float as Python's repr does: the
// shortest digits that read back the same, in positional notation when the
// decimal exponent is from -4 to 15 (with ".0" on whole numbers), else as
// d.ddde+XX with at least two exponent digits.
func appendFloatRepr(dst []byte, f float64) []byte {
	e := strconv.FormatFloat(f, 'e', -1, 64) // [-]d[.ddd]e±XX
	neg := e[0] == '-'
	if neg {
		e = e[1:]
		dst = append(dst, '-')
	}
	mant, exp, _ := strings.Cut(e, "e")
	x, _ := strconv.Atoi(exp)
	digits := strings.Replace(mant, ".", "", 1)
	if x < -4 || x >= 16 {
		dst = append(dst, digits[0])
		if len(digits) > 1 {
			dst = append(dst, '.')
			dst = append(dst, digits[1:]...)
		}
		dst = append(dst, 'e')
		if x < 0 {
			dst = append(dst, '-')
			x = -x
		} else {
			dst = append(dst, '+')
		}
		if x < 10 {
			dst = append(dst, '0')
		}
		return strconv.AppendInt(dst, int64(x), 10)
	}
	if x < 0 {
		dst = append(dst, "0."...)
		dst = append(dst, strings.Repeat("0", -x-1)...)
		return append(dst, digits...)
	}
	if len(digits) <= x+1 {
		dst = append(dst, digits...)
		dst = append(dst, strings.Repeat("0", x+1-len(digits))...)
		return append(dst, ".0"...)
	}
	dst = append(dst, digits[:x+1]...)
	dst = append(dst, '.')
	return append(dst, digits[x+1:]...)
}

// appendStr appends str(v): what "{}".format(v) writes.
func appendStr(dst []byte, v pyValue) []byte {
	switch v.kind {
	case pyStr:
		for _, r := range v.s {
			dst = utf8.AppendRune(dst, r) // a surrogate becomes U+FFFD; see pyText
		}
		return dst
	case pyFloat:
		switch {
		case math.IsNaN(v.f):
			return append(dst, "nan"...)
		case math.IsInf(v.f, 1):
			return append(dst, "inf"...)
		case math.IsInf(v.f, -1):
			return append(dst, "-inf"...)
		}
	}
	return appendRepr(dst, v)
}

// appendRepr appends repr(v).
func appendRepr(dst []byte, v pyValue) []byte {
	switch v.kind {
	case pyNone:
		return append(dst, "None"...)
	case pyBool:
		if v.b {
			return append(dst, "True"...)
		}
		return append(dst, "False"...)
	case pyInt:
		return append(dst, v.num...)
	case pyFloat:
		if math.IsNaN(v.f) || math.IsInf(v.f, 0) {
			return appendStr(dst, v)
		}
		return appendFloatRepr(dst, v.f)
	case pyStr:
		return appendReprString(dst, v.s)
	case pyList:
		dst = append(dst, '[')
		for i, e := range v.list {
			if i > 0 {
				dst = append(dst, ", "...)
			}
			dst = appendRepr(dst, e)
		}
		return append(dst, ']')
	}
	dst = append(dst, '{')
	for i, k := range v.keys {
		if i > 0 {
			dst = append(dst, ", "...)
		}
		dst = appendReprString(dst, k)
		dst = append(dst, ": "...)
		dst = appendRepr(dst, v.vals[i])
	}
	return append(dst, '}')
}

// appendReprString appends repr(s): single quotes unless s holds a single
// quote and no double one; backslash escapes for the quote, backslash, tab,
// CR, LF and characters that are not printable.
func appendReprString(dst []byte, s []rune) []byte {
	quote := '\''
	if slices.Contains(s, '\'') && !slices.Contains(s, '"') {
		quote = '"'
	}
	dst = append(dst, byte(quote))
	for _, r := range s {
		switch {
		case r == quote || r == '\\':
			dst = append(dst, '\\', byte(r))
		case r == '\t':
			dst = append(dst, `\t`...)
		case r == '\n':
			dst = append(dst, `\n`...)
		case r == '\r':
			dst = append(dst, `\r`...)
		case r < ' ' || r == 0x7f:
			dst = append(dst, '\\', 'x', lowerHex[r>>4], lowerHex[r&15])
		case r < 0x7f:
			dst = append(dst, byte(r))
		case unicode.IsPrint(r) && !(0xd800 <= r && r <= 0xdfff):
			dst = utf8.AppendRune(dst, r)
		case r <= 0xff:
			dst = append(dst, '\\', 'x', lowerHex[r>>4], lowerHex[r&15])
		case r <= 0xffff:
			dst = append(dst, '\\', 'u', lowerHex[r>>12&15], lowerHex[r>>8&15], lowerHex[r>>4&15], lowerHex[r&15])
		default:
			dst = append(dst, '\\', 'U')
			for shift := 28; shift >= 0; shift -= 4 {
				dst = append(dst, lowerHex[r>>shift&15])
			}
		}
	}
	return append(dst, byte(quote))
}

// hasSurrogate reports whether str(v) would hold a lone surrogate, which
// Python cannot write to a response as UTF-8.
func (v pyValue) hasSurrogate() bool {
	return v.kind == pyStr && slices.ContainsFunc(v.s, func(r rune) bool { return 0xd800 <= r && r <= 0xdfff })
}

// pySplitLines splits s as str.splitlines() does: at LF, CR, CRLF, VT, FF,
// the file, group and record separators, NEL, and the Unicode line and
// paragraph separators, with no empty piece after a final line break.
func pySplitLines(s []rune) [][]rune {
	var lines [][]rune
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\n', '\r', '\v', '\f', 0x1c, 0x1d, 0x1e, 0x85, 0x2028, 0x2029:
			lines = append(lines, s[start:i])
			if s[i] == '\r' && i+1 < len(s) && s[i+1] == '\n' {
				i++
			}
			start = i + 1
		}
	}
	if start < len(s) {
		lines = append(lines, s[start:])
	}
	return lines
}
