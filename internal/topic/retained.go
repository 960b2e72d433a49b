package topic

import (
	"strings"
	"sync"
	"sync/atomic"
)

// rnode is one level of a Retained trie. All fields are guarded by Retained.mu.
type rnode[V any] struct {
	parent *rnode[V]
	// key is this node's level in parent.children.
	key string
	// children holds the next levels; nil when empty.
	children map[string]*rnode[V]
	// name is the full topic name when set is true, kept so Match can hand
	// it to fn without building it from the levels.
	name string
	val  V
	set  bool
}

// Retained holds retained messages by topic name (V is the broker's message type) and finds those
// matching a new subscription filter. Safe for concurrent use.
type Retained[V any] struct {
	// mu guards root, every node below it and nodes.
	mu   sync.RWMutex
	root rnode[V]
	// nodes counts the nodes below root, so tests can prove pruning.
	nodes int
	// count is the number of stored names; atomic so Len takes no lock.
	count atomic.Int64
}

// NewRetained returns an empty Retained.
func NewRetained[V any]() *Retained[V] {
	return &Retained[V]{}
}

// Set stores v under name, replacing any earlier value ([MQTT-3.3.1-5]); reports whether it replaced.
// name must be valid (see ValidateName). The caller decides what to store: a zero-byte retained
// message is never stored but removes the old one with Delete ([MQTT-3.3.1-10], [MQTT-3.3.1-11]).
func (r *Retained[V]) Set(name string, v V) (replaced bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := &r.root
	// owned is one private copy of name; node keys and the stored name are
	// substrings of it, so nothing aliases a buffer the caller reuses.
	var owned string
	for p := 0; p <= len(name); {
		e := levelEnd(name, p)
		c := n.children[name[p:e]]
		if c == nil {
			if owned == "" {
				owned = strings.Clone(name)
			}
			c = &rnode[V]{parent: n, key: owned[p:e]}
			if n.children == nil {
				n.children = make(map[string]*rnode[V])
			}
			n.children[c.key] = c
			r.nodes++
		}
		n = c
		p = e + 1
	}
	replaced = n.set
	if !n.set {
		if owned == "" {
			owned = strings.Clone(name)
		}
		n.name = owned
		n.set = true
		r.count.Add(1)
	}
	n.val = v
	return replaced
}

// lookupLocked returns the node for name, or nil. Lock should be held.
func (r *Retained[V]) lookupLocked(name string) *rnode[V] {
	n := &r.root
	for p := 0; p <= len(name); {
		e := levelEnd(name, p)
		n = n.children[name[p:e]]
		if n == nil {
			return nil
		}
		p = e + 1
	}
	return n
}

// Delete removes name's value; reports whether there was one ([MQTT-3.3.1-10], [MQTT-3.3.1-11]).
// Nodes left empty are pruned at once, so memory does not grow with churn.
func (r *Retained[V]) Delete(name string) (deleted bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.lookupLocked(name)
	if n == nil || !n.set {
		return false
	}
	var zero V
	n.val, n.name, n.set = zero, "", false
	r.count.Add(-1)
	for n.parent != nil && !n.set && len(n.children) == 0 {
		p := n.parent
		delete(p.children, n.key)
		if len(p.children) == 0 {
			// A map never shrinks; dropping it returns its memory.
			p.children = nil
		}
		n.parent = nil
		r.nodes--
		n = p
	}
	return true
}

// Get returns the value stored under name and whether there is one.
func (r *Retained[V]) Get(name string) (V, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if n := r.lookupLocked(name); n != nil && n.set {
		return n.val, true
	}
	var zero V
	return zero, false
}

// Len returns the number of stored names.
func (r *Retained[V]) Len() int {
	return int(r.count.Load())
}

// Match calls fn for each stored name matched by filter (with the '$' rule, [MQTT-4.7.2-1]), until fn
// returns false. The order is unspecified. It walks only the branches filter can match. fn runs under
// the read lock, so it must not call back into r. filter must be valid (see ValidateFilter).
func (r *Retained[V]) Match(filter string, fn func(name string, v V) bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	matchRetainedLocked(&r.root, true, filter, 0, fn)
}

// skipDollar reports whether a wildcard at the root must skip the child with
// level key: names starting with '$' are not matched by a first level '+' or
// '#' [MQTT-4.7.2-1].
func skipDollar(root bool, key string) bool {
	return root && len(key) > 0 && key[0] == '$'
}

// matchRetainedLocked calls fn for each set node below n matched by the
// levels of filter from p on, and returns false once fn has returned false.
// Lock should be held (read or write).
func matchRetainedLocked[V any](n *rnode[V], root bool, filter string, p int, fn func(string, V) bool) bool {
	for {
		e := levelEnd(filter, p)
		last := e >= len(filter)
		switch level := filter[p:e]; level {
		case "#":
			// '#' matches the parent level too: "sport/#" matches "sport"
			// [MQTT-4.7.1-2]. The root is never set.
			if n.set && !fn(n.name, n.val) {
				return false
			}
			for k, c := range n.children {
				if skipDollar(root, k) {
					continue
				}
				if !visitAllLocked(c, fn) {
					return false
				}
			}
			return true
		case "+":
			for k, c := range n.children {
				if skipDollar(root, k) {
					continue
				}
				if last {
					if c.set && !fn(c.name, c.val) {
						return false
					}
				} else if !matchRetainedLocked(c, false, filter, e+1, fn) {
					return false
				}
			}
			return true
		default:
			c := n.children[level]
			if c == nil {
				return true
			}
			if last {
				return !c.set || fn(c.name, c.val)
			}
			n, root, p = c, false, e+1
		}
	}
}

// visitAllLocked calls fn for n and every set node below it, and returns false
// once fn has returned false. Lock should be held (read or write).
func visitAllLocked[V any](n *rnode[V], fn func(string, V) bool) bool {
	if n.set && !fn(n.name, n.val) {
		return false
	}
	for _, c := range n.children {
		if !visitAllLocked(c, fn) {
			return false
		}
	}
	return true
}
