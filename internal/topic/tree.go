package topic

import (
	"strings"
	"sync"
	"sync/atomic"
)

// nodeIndexMin is the number of subscribers on one filter above which a node
// keeps a map from subscriber to slice position. Below it a linear scan is
// cheaper than hashing and costs no memory.
const nodeIndexMin = 16

// Subscriber is one match result: a subscriber and the QoS granted to it.
type Subscriber[S comparable] struct {
	// Sub identifies the subscriber.
	Sub S
	// QoS is the granted QoS, 0..2.
	QoS byte
}

// node is one level of a Tree. All fields are guarded by Tree.mu.
type node[S comparable] struct {
	parent *node[S]
	// key is this node's level in its parent ("+" and "#" for the wildcard
	// children); it is used to unlink the node when it is pruned.
	key string
	// literal holds the children whose level is not a wildcard; nil when empty.
	literal map[string]*node[S]
	// plus and hash are the '+' and '#' children, kept out of literal so a
	// match reaches them without a map lookup.
	plus, hash *node[S]
	// subs are the subscribers whose filter ends at this node, each once.
	subs []Subscriber[S]
	// pos maps a subscriber to its index in subs once there are more than
	// nodeIndexMin of them, so that Subscribe and Unsubscribe stay O(1) on
	// popular filters.
	pos map[S]int
}

func (n *node[S]) empty() bool {
	return len(n.subs) == 0 && len(n.literal) == 0 && n.plus == nil && n.hash == nil
}

func (n *node[S]) find(sub S) (int, bool) {
	if n.pos != nil {
		i, ok := n.pos[sub]
		return i, ok
	}
	for i := range n.subs {
		if n.subs[i].Sub == sub {
			return i, true
		}
	}
	return -1, false
}

// add stores sub with qos, replacing the QoS when sub is already there, and
// reports whether it was new.
func (n *node[S]) add(sub S, qos byte) bool {
	if i, ok := n.find(sub); ok {
		// One entry per subscriber and filter; a repeated SUBSCRIBE only
		// updates the granted QoS [MQTT-3.8.4-3].
		n.subs[i].QoS = qos
		return false
	}
	n.subs = append(n.subs, Subscriber[S]{Sub: sub, QoS: qos})
	switch {
	case n.pos != nil:
		n.pos[sub] = len(n.subs) - 1
	case len(n.subs) > nodeIndexMin:
		n.pos = make(map[S]int, len(n.subs))
		for i, s := range n.subs {
			n.pos[s.Sub] = i
		}
	}
	return true
}

// remove deletes sub and reports whether it was there.
func (n *node[S]) remove(sub S) bool {
	i, ok := n.find(sub)
	if !ok {
		return false
	}
	last := len(n.subs) - 1
	if i != last {
		n.subs[i] = n.subs[last]
		if n.pos != nil {
			n.pos[n.subs[i].Sub] = i
		}
	}
	n.subs[last] = Subscriber[S]{} // drop the reference so the subscriber can be collected
	n.subs = n.subs[:last]
	if n.pos != nil {
		delete(n.pos, sub)
		// Hysteresis: drop the index well below the threshold that built it,
		// so a filter hovering around it does not rebuild the map each time.
		if len(n.subs) < nodeIndexMin/2 {
			n.pos = nil
		}
	}
	switch {
	case len(n.subs) == 0:
		n.subs = nil
	case cap(n.subs) > 64 && len(n.subs) < cap(n.subs)/4:
		// Give back the memory of a filter that once had many subscribers.
		n.subs = append([]Subscriber[S](nil), n.subs...)
	}
	return true
}

// Tree is a subscription index: filters → subscribers, each with a granted QoS (byte 0..2).
// S identifies a subscriber (the broker uses a pointer type). Safe for concurrent use.
type Tree[S comparable] struct {
	// mu guards root, every node below it and nodes.
	mu   sync.RWMutex
	root node[S]
	// nodes counts the nodes below root, so tests can prove pruning.
	nodes int
	// count is the number of (filter, subscriber) pairs; atomic so Len does
	// not contend with Match.
	count atomic.Int64
}

// NewTree returns an empty Tree.
func NewTree[S comparable]() *Tree[S] {
	return &Tree[S]{}
}

// Subscribe adds or replaces sub's subscription to filter; replacing keeps one entry and updates the
// QoS ([MQTT-3.8.4-3]). Reports whether it was new. filter must be valid (see ValidateFilter).
func (t *Tree[S]) Subscribe(filter string, sub S, qos byte) (added bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := &t.root
	// owned is a private copy of filter, made once and only if a node must be
	// created, so node keys never alias a buffer the caller reuses.
	var owned string
	for p := 0; p <= len(filter); {
		e := levelEnd(filter, p)
		level := filter[p:e]
		var c *node[S]
		switch level {
		case "+":
			c = n.plus
		case "#":
			c = n.hash
		default:
			c = n.literal[level]
		}
		if c == nil {
			if owned == "" {
				owned = strings.Clone(filter)
			}
			c = &node[S]{parent: n, key: owned[p:e]}
			switch level {
			case "+":
				n.plus = c
			case "#":
				n.hash = c
			default:
				if n.literal == nil {
					n.literal = make(map[string]*node[S])
				}
				n.literal[c.key] = c
			}
			t.nodes++
		}
		n = c
		p = e + 1
	}
	if n.add(sub, qos) {
		t.count.Add(1)
		return true
	}
	return false
}

// Unsubscribe removes sub's subscription to filter; reports whether it existed. Nodes left empty are
// pruned at once, so memory does not grow with subscribe/unsubscribe churn.
func (t *Tree[S]) Unsubscribe(filter string, sub S) (removed bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := &t.root
	for p := 0; p <= len(filter); {
		e := levelEnd(filter, p)
		switch level := filter[p:e]; level {
		case "+":
			n = n.plus
		case "#":
			n = n.hash
		default:
			n = n.literal[level]
		}
		if n == nil {
			return false
		}
		p = e + 1
	}
	if !n.remove(sub) {
		return false
	}
	t.count.Add(-1)
	t.pruneLocked(n)
	return true
}

// pruneLocked unlinks n and then each ancestor that is left empty.
// Lock should be held for writing.
func (t *Tree[S]) pruneLocked(n *node[S]) {
	for n.parent != nil && n.empty() {
		p := n.parent
		switch n {
		case p.plus:
			p.plus = nil
		case p.hash:
			p.hash = nil
		default:
			delete(p.literal, n.key)
			if len(p.literal) == 0 {
				// A map never shrinks; dropping it returns its memory.
				p.literal = nil
			}
		}
		n.parent = nil
		t.nodes--
		n = p
	}
}

// Len returns the number of (filter, subscriber) pairs.
func (t *Tree[S]) Len() int {
	return int(t.count.Load())
}

// Match finds every subscriber with a filter matching name and stores them in m, each subscriber once
// at the highest QoS among its matching filters (overlapping subscriptions: [MQTT-3.3.5-1]). The order
// of the results is unspecified. name must be valid (see ValidateName). With a reused m, Match does
// not allocate once m has grown to the size of the result.
func (t *Tree[S]) Match(name []byte, m *Matches[S]) {
	m.nodes = m.nodes[:0]
	if len(name) == 0 {
		m.subs = m.subs[:0] // an empty name is invalid and matches nothing [MQTT-4.7.3-1]
		return
	}
	t.mu.RLock()
	if len(name) > 0 && name[0] == '$' {
		// The root's '+' and '#' children never match a name that starts
		// with '$' [MQTT-4.7.2-1]; only a literal first level can.
		e := levelEnd(name, 0)
		if c := t.root.literal[string(name[:e])]; c != nil {
			matchLocked(c, name, e+1, m)
		}
	} else {
		matchLocked(&t.root, name, 0, m)
	}
	// The subscriber slices are read under the lock because Subscribe may
	// change them as soon as it is released.
	m.collect()
	t.mu.RUnlock()
}

// matchLocked appends to m.nodes each node below n whose filter matches the
// levels of name from p on. It follows the literal child in a loop and
// recurses only into '+' children, so the stack grows with the number of '+'
// levels that match rather than the depth of the name.
// Lock should be held (read or write).
func matchLocked[S comparable](n *node[S], name []byte, p int, m *Matches[S]) {
	for {
		if h := n.hash; h != nil && len(h.subs) > 0 {
			// A '#' child matches whatever remains, including nothing: "a/#"
			// matches "a" [MQTT-4.7.1-2].
			m.nodes = append(m.nodes, h)
		}
		if p > len(name) {
			if len(n.subs) > 0 {
				m.nodes = append(m.nodes, n)
			}
			return
		}
		e := levelEnd(name, p)
		if n.plus != nil {
			// '+' matches exactly one level, which may be empty [MQTT-4.7.1-3].
			matchLocked(n.plus, name, e+1, m)
		}
		c := n.literal[string(name[p:e])]
		if c == nil {
			return
		}
		n, p = c, e+1
	}
}

// linearDedupMax is the result size up to which Matches removes duplicates by
// scanning its result rather than through a map. BenchmarkDedup (two nodes,
// half overlapping) put the crossover between 64 and 128 subscribers: the scan
// was about 4x faster at 16, about even at 64 and 2x slower at 128.
const linearDedupMax = 64

// Matches is a reusable match result; the zero value is ready. Reusing one across calls makes Match
// allocation-free once it has grown. Not safe for concurrent use (each caller goroutine owns one).
type Matches[S comparable] struct {
	subs []Subscriber[S]
	// nodes are the matching nodes found by the last walk.
	nodes []*node[S]
	// index maps a subscriber to its position in subs when a result is too
	// large for a linear scan; kept between calls so it is allocated once.
	index map[S]int
}

// Subscribers returns the result of the last Match (valid until the next Match with m).
func (m *Matches[S]) Subscribers() []Subscriber[S] {
	return m.subs
}

// collect merges the subscribers of m.nodes into m.subs, one entry per
// subscriber at the highest QoS of its matching filters [MQTT-3.3.5-1].
func (m *Matches[S]) collect() {
	m.subs = m.subs[:0]
	switch len(m.nodes) {
	case 0:
		return
	case 1:
		// Each node holds a subscriber once, so a single node needs no
		// de-duplication; this is the common case.
		m.subs = append(m.subs, m.nodes[0].subs...)
	default:
		total := 0
		for _, n := range m.nodes {
			total += len(n.subs)
		}
		// The first node's subscribers are distinct among themselves.
		m.subs = append(m.subs, m.nodes[0].subs...)
		if total <= linearDedupMax {
			m.mergeLinear()
		} else {
			m.mergeIndexed()
		}
	}
	// Do not keep pruned nodes alive until the next call.
	clear(m.nodes)
	m.nodes = m.nodes[:0]
}

// mergeLinear adds the subscribers of m.nodes[1:] to m.subs, which holds
// those of m.nodes[0], finding duplicates by scanning m.subs.
func (m *Matches[S]) mergeLinear() {
	for _, n := range m.nodes[1:] {
	next:
		for _, s := range n.subs {
			for i := range m.subs {
				if m.subs[i].Sub == s.Sub {
					m.subs[i].QoS = max(m.subs[i].QoS, s.QoS)
					continue next
				}
			}
			m.subs = append(m.subs, s)
		}
	}
}

// mergeIndexed adds the subscribers of m.nodes[1:] to m.subs, which holds
// those of m.nodes[0], finding duplicates through m.index.
func (m *Matches[S]) mergeIndexed() {
	if m.index == nil {
		m.index = make(map[S]int)
	}
	for i, s := range m.subs {
		m.index[s.Sub] = i
	}
	for _, n := range m.nodes[1:] {
		for _, s := range n.subs {
			if i, ok := m.index[s.Sub]; ok {
				m.subs[i].QoS = max(m.subs[i].QoS, s.QoS)
				continue
			}
			m.index[s.Sub] = len(m.subs)
			m.subs = append(m.subs, s)
		}
	}
	// Empty the index now rather than before the next use, so it does not
	// keep subscribers alive in between.
	clear(m.index)
}
