package metrics_test

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/metrics"
)

// The alerting rules and the runbook are checked against what the collector
// really exports, gathered from a real bus.

const (
	rulesFile     = "../deploy/prometheus/boxcar.rules.yml"
	rulesTestFile = "../deploy/prometheus/boxcar.rules.test.yml"
	runbookFile   = "../docs/RUNBOOK.md"
)

// ruleFile is the part of Prometheus's rule file format the tests read;
// decoding with KnownFields refuses any other key (a misspelled for:).
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func loadRules(t *testing.T) []rule {
	t.Helper()
	raw, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	var f ruleFile
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	var rules []rule
	for _, g := range f.Groups {
		rules = append(rules, g.Rules...)
	}
	if len(rules) == 0 {
		t.Fatalf("%s: no rules", rulesFile)
	}
	return rules
}

// exported gathers a real bus with a running subscriber (so that every
// family is there: run counters, histograms, health, dead letters) and
// returns the scrape.
func exported(t *testing.T) scrape {
	t.Helper()
	b := setup(t, metrics.Options{})
	if _, err := b.bus.Subscribe(b.ctx, "mailer", boxcar.HandlerFunc(func(context.Context, boxcar.Message) error { return nil }), boxcar.SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	return b.gather()
}

// selector is a metric name in an expression and its label matchers.
type selector struct {
	metric   string
	matchers []matcher
}

type matcher struct{ label, op, value string }

// groupingKeywords take a list of label names in parentheses.
var groupingKeywords = []string{"by", "without", "on", "ignoring", "group_left", "group_right"}

// parseExpr returns the selectors of the metrics of namespace ns in a PromQL
// expression, and the label names of its grouping clauses. It is a lexer,
// not a parser: strings are skipped, a name of the namespace outside one is
// a metric, and braces after it hold its matchers.
func parseExpr(expr, ns string) ([]selector, []string, error) {
	var sels []selector
	var grouping []string
	l := lexer{s: expr}
	for l.more() {
		switch c := l.peek(); {
		case c == '"' || c == '\'' || c == '`':
			if _, err := l.quoted(); err != nil {
				return nil, nil, err
			}
		case isIdentStart(c):
			id := l.ident()
			switch {
			case strings.HasPrefix(id, ns+"_"):
				sel := selector{metric: id}
				if l.skipSpace(); l.more() && l.peek() == '{' {
					ms, err := l.matchers()
					if err != nil {
						return nil, nil, fmt.Errorf("matchers of %s: %w", id, err)
					}
					sel.matchers = ms
				}
				sels = append(sels, sel)
			case slices.Contains(groupingKeywords, id):
				if l.skipSpace(); l.more() && l.peek() == '(' {
					grouping = append(grouping, l.list()...)
				}
			}
		default:
			l.i++
		}
	}
	return sels, grouping, nil
}

type lexer struct {
	s string
	i int
}

func (l *lexer) more() bool { return l.i < len(l.s) }
func (l *lexer) peek() byte { return l.s[l.i] }

func (l *lexer) skipSpace() {
	for l.more() && strings.ContainsRune(" \t\n", rune(l.peek())) {
		l.i++
	}
}

func isIdentStart(c byte) bool {
	return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func (l *lexer) ident() string {
	start := l.i
	for l.more() && (isIdentStart(l.peek()) || l.peek() >= '0' && l.peek() <= '9') {
		l.i++
	}
	return l.s[start:l.i]
}

// quoted reads a string in ", ' or ` quotes (backslash escapes in the first
// two) and returns its content.
func (l *lexer) quoted() (string, error) {
	q := l.peek()
	l.i++
	var b strings.Builder
	for l.more() {
		c := l.peek()
		l.i++
		switch {
		case c == q:
			return b.String(), nil
		case c == '\\' && q != '`' && l.more():
			b.WriteByte(l.peek())
			l.i++
		default:
			b.WriteByte(c)
		}
	}
	return "", fmt.Errorf("unterminated string")
}

// matchers reads {label op "value", ...}.
func (l *lexer) matchers() ([]matcher, error) {
	l.i++ // {
	var ms []matcher
	for {
		l.skipSpace()
		if l.more() && l.peek() == '}' {
			l.i++
			return ms, nil
		}
		var m matcher
		if m.label = l.ident(); m.label == "" {
			return nil, fmt.Errorf("label name expected at %q", l.s[l.i:])
		}
		l.skipSpace()
		for _, op := range []string{"=~", "!~", "!=", "="} {
			if strings.HasPrefix(l.s[l.i:], op) {
				m.op = op
				l.i += len(op)
				break
			}
		}
		if l.skipSpace(); m.op == "" || !l.more() {
			return nil, fmt.Errorf("operator and value expected after %s", m.label)
		}
		v, err := l.quoted()
		if err != nil {
			return nil, err
		}
		m.value = v
		ms = append(ms, m)
		if l.skipSpace(); l.more() && l.peek() == ',' {
			l.i++
		}
	}
}

// list reads (name, name, ...).
func (l *lexer) list() []string {
	l.i++ // (
	var names []string
	for l.more() && l.peek() != ')' {
		if isIdentStart(l.peek()) {
			names = append(names, l.ident())
			continue
		}
		l.i++
	}
	l.i++
	return names
}

// familyOf returns the family a series name of a scrape belongs to (a
// histogram's _bucket, _sum and _count belong to the histogram).
func familyOf(s scrape, name string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && s[base] != nil {
			return base
		}
	}
	return name
}

// labelValues returns every label of family and the values it takes in s.
func labelValues(s scrape, family string) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for _, m := range s.series(family) {
		for _, lp := range m.GetLabel() {
			if out[lp.GetName()] == nil {
				out[lp.GetName()] = map[string]bool{}
			}
			out[lp.GetName()][lp.GetValue()] = true
		}
	}
	return out
}

// targetLabels are added by Prometheus at scrape time, not by the collector.
var targetLabels = []string{"instance", "job"}

// TestRulesUseExportedMetrics checks every rule's expression: each metric
// is one the collector exports (with a histogram's suffixes), each label
// it matches or groups by is one of that metric's, and each value it
// matches with = is one the metric takes (a state or result misspelled
// never matches). Each label an annotation reads ($labels.x) must be one
// of the expression's metrics'.
func TestRulesUseExportedMetrics(t *testing.T) {
	t.Parallel()
	s := exported(t)
	names := metricNames(s)
	for _, r := range loadRules(t) {
		sels, grouping, err := parseExpr(r.Expr, metrics.DefaultNamespace)
		if err != nil || len(sels) == 0 {
			t.Errorf("%s: expr %q: %v, %d metrics", r.Alert, r.Expr, err, len(sels))
			continue
		}
		labels := map[string]bool{}
		for _, l := range targetLabels {
			labels[l] = true
		}
		for _, sel := range sels {
			if !names[sel.metric] {
				t.Errorf("%s: %s is not exported by the collector", r.Alert, sel.metric)
				continue
			}
			family := familyOf(s, sel.metric)
			values := labelValues(s, family)
			if strings.HasSuffix(sel.metric, "_bucket") {
				values["le"] = nil // a histogram's bucket bound
			}
			for l := range values {
				labels[l] = true
			}
			for _, m := range sel.matchers {
				if _, ok := values[m.label]; !ok && !slices.Contains(targetLabels, m.label) {
					t.Errorf("%s: %s has no label %q", r.Alert, sel.metric, m.label)
				} else if m.op == "=" && values[m.label] != nil && !values[m.label][m.value] {
					t.Errorf("%s: %s{%s=%q}: the collector exports no such value (it has %v)", r.Alert, sel.metric, m.label, m.value, values[m.label])
				}
			}
		}
		for _, l := range grouping {
			if !labels[l] {
				t.Errorf("%s: groups by %q, a label of none of its metrics", r.Alert, l)
			}
		}
		for key, text := range r.Annotations {
			for _, m := range regexp.MustCompile(`\$labels\.(\w+)`).FindAllStringSubmatch(text, -1) {
				if !labels[m[1]] {
					t.Errorf("%s: annotation %s reads $labels.%s, a label of none of its metrics", r.Alert, key, m[1])
				}
			}
		}
	}
}

// runbookAnchors returns the runbook and its anchors (<a id="x"></a>), with
// the text of each anchor's section (up to the next anchor).
func runbookAnchors(t *testing.T) (string, map[string]string) {
	t.Helper()
	raw, err := os.ReadFile(runbookFile)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	anchor := regexp.MustCompile(`<a id="([a-z0-9-]+)"></a>`)
	locs := anchor.FindAllStringSubmatchIndex(doc, -1)
	sections := map[string]string{}
	for i, loc := range locs {
		end := len(doc)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		id := doc[loc[2]:loc[3]]
		if _, dup := sections[id]; dup {
			t.Errorf("%s: anchor %q twice", runbookFile, id)
		}
		sections[id] = doc[loc[1]:end]
	}
	return doc, sections
}

// TestRulesAreComplete checks that every rule has a unique Boxcar* name,
// a for:, a severity and the annotations an on-call engineer reads, and a
// runbook_url whose anchor is a section of docs/RUNBOOK.md that names the
// alert.
func TestRulesAreComplete(t *testing.T) {
	t.Parallel()
	_, sections := runbookAnchors(t)
	seen := map[string]bool{}
	for _, r := range loadRules(t) {
		if !regexp.MustCompile(`^Boxcar[A-Z]\w+$`).MatchString(r.Alert) || seen[r.Alert] {
			t.Errorf("alert %q: want a unique name Boxcar...", r.Alert)
		}
		seen[r.Alert] = true
		if _, err := model.ParseDuration(r.For); err != nil {
			t.Errorf("%s: for %q: %v", r.Alert, r.For, err)
		}
		if sev := r.Labels["severity"]; !slices.Contains([]string{"critical", "warning", "info"}, sev) {
			t.Errorf("%s: severity %q, want critical, warning or info", r.Alert, sev)
		}
		for _, key := range []string{"summary", "description", "runbook_url"} {
			if strings.TrimSpace(r.Annotations[key]) == "" {
				t.Errorf("%s: no %s annotation", r.Alert, key)
			}
		}
		u, err := url.Parse(r.Annotations["runbook_url"])
		if err != nil || u.Scheme != "https" || !strings.HasSuffix(u.Path, "/docs/RUNBOOK.md") || u.Fragment == "" {
			t.Errorf("%s: runbook_url %q: want https://.../docs/RUNBOOK.md#anchor (%v)", r.Alert, r.Annotations["runbook_url"], err)
			continue
		}
		section, ok := sections[u.Fragment]
		if !ok {
			t.Errorf("%s: runbook anchor #%s is not in %s", r.Alert, u.Fragment, runbookFile)
		} else if !strings.Contains(section, r.Alert) {
			t.Errorf("%s: the runbook's section #%s does not name the alert", r.Alert, u.Fragment)
		}
	}
}

// TestRunbookNamesRealAlerts checks the other way: every alert the runbook
// names is a rule, and every rule has a promtool unit test in
// boxcar.rules.test.yml.
func TestRunbookNamesRealAlerts(t *testing.T) {
	t.Parallel()
	rules := map[string]bool{}
	for _, r := range loadRules(t) {
		rules[r.Alert] = true
	}
	doc, _ := runbookAnchors(t)
	for _, name := range regexp.MustCompile(`\bBoxcar[A-Z][A-Za-z]+\b`).FindAllString(doc, -1) {
		if !rules[name] {
			t.Errorf("the runbook names %s, which is no rule", name)
		}
	}
	raw, err := os.ReadFile(rulesTestFile)
	if err != nil {
		t.Fatal(err)
	}
	var tests struct {
		RuleFiles []string `yaml:"rule_files"`
		Tests     []struct {
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal(raw, &tests); err != nil {
		t.Fatalf("%s: %v", rulesTestFile, err)
	}
	tested := map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			tested[a.Alertname] = true
		}
	}
	for name := range rules {
		if !tested[name] {
			t.Errorf("%s has no promtool unit test in %s", name, rulesTestFile)
		}
	}
}

// TestParseExpr checks the expression lexer on the shapes the rules use.
func TestParseExpr(t *testing.T) {
	t.Parallel()
	sels, grouping, err := parseExpr(`histogram_quantile(0.99, sum by (le, subscriber) (rate(boxcar_x_bucket{a="b\"c", state=~"x|y"}[5m]))) > 1 and boxcar_y == 0 or "boxcar_in_string"`, "boxcar")
	if err != nil {
		t.Fatal(err)
	}
	want := []selector{{"boxcar_x_bucket", []matcher{{"a", "=", `b"c`}, {"state", "=~", "x|y"}}}, {"boxcar_y", nil}}
	if fmt.Sprint(sels) != fmt.Sprint(want) || !slices.Equal(grouping, []string{"le", "subscriber"}) {
		t.Errorf("parseExpr = %v %v, want %v [le subscriber]", sels, grouping, want)
	}
	if _, _, err := parseExpr(`boxcar_x{a="b}`, "boxcar"); err == nil {
		t.Error("an unterminated string: no error")
	}
}

// cliGrammar is the boxcar CLI's grammar, as the runbook may use it.
var cliGrammar = []*regexp.Regexp{
	regexp.MustCompile(`^boxcar (status|health)$`),
	regexp.MustCompile(`^boxcar subscribers( (pause|resume|retire) [A-Za-z0-9_-]+)?$`),
	regexp.MustCompile(`^boxcar dlq (ls|show SEQ|redrive SEQ|redrive --subscriber S( \[?--key K\]?)?|discard SEQ --why ("[^"]+"|W))$`),
	regexp.MustCompile(`^boxcar replay [A-Za-z0-9_-]+ --(from-stream-seq \d+|from-outbox-seq \d+|from-time \S+)( --no-dedupe)?$`),
	regexp.MustCompile(`^boxcar outbox ls( --dead)?$`),
	regexp.MustCompile(`^boxcar schema check DIR --db \S+$`),
}

// TestRunbookCommands checks that every boxcar command of the runbook is
// one of the CLI's grammar (what its rehearsal tests will run) and that
// every link to a section points at an anchor that exists.
func TestRunbookCommands(t *testing.T) {
	t.Parallel()
	doc, sections := runbookAnchors(t)
	commands := 0
	for _, m := range regexp.MustCompile("`(boxcar (?:status|health|subscribers|dlq|replay|outbox|schema)[^`]*)`").FindAllStringSubmatch(doc, -1) {
		commands++
		if !slices.ContainsFunc(cliGrammar, func(re *regexp.Regexp) bool { return re.MatchString(m[1]) }) {
			t.Errorf("the runbook's command %q is not in the CLI's grammar", m[1])
		}
	}
	if commands < 20 {
		t.Errorf("the runbook has %d boxcar commands: the lexer missed them", commands)
	}
	for _, m := range regexp.MustCompile(`\]\(#([a-z0-9-]+)\)`).FindAllStringSubmatch(doc, -1) {
		if _, ok := sections[m[1]]; !ok {
			t.Errorf("the runbook links to #%s, which is no anchor", m[1])
		}
	}
}
