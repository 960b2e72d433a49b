// Package topic implements MQTT topic names and topic filters (section 4.7 of
// MQTT 3.1.1): validation, matching a single filter against a name, a
// subscription index (Tree) that finds every subscriber of a PUBLISH topic, and
// a retained-message index (Retained) that finds every stored topic name
// matched by a new subscription filter.
//
// # Levels
//
// A name or filter is split into levels at each '/'. An empty string between
// separators is a level too, so "/finance" has two levels, "" and "finance",
// and "a/" has "a" and "". Matching compares levels byte for byte with no
// normalisation [MQTT-4.7.3-4].
//
// # Data structures
//
// Tree and Retained are tries with one node per level. Each node keeps its
// literal children in a map and, in Tree, direct pointers to its '+' and '#'
// children, so a match walks only the branches a topic can reach. Each trie is
// guarded by one sync.RWMutex (never a lock per node) and counts its entries
// with an atomic, so Len never takes the lock. Nodes left empty by Unsubscribe
// or Delete are removed at once, so memory follows the live set and does not
// grow with churn.
//
// # Allocation
//
// ValidateName, Match and Tree.Match with a reused Matches do not allocate:
// names are split by index arithmetic over the caller's bytes, and map lookups
// use m[string(b)], which the compiler performs without a copy. The tries copy
// the strings they keep, so callers may pass strings that alias buffers they
// reuse.
//
// # Caveats
//
// Tree and Retained assume that filters and names were validated with
// ValidateFilter and ValidateName; they do not validate again on every call.
// Retained.Match holds the read lock while it calls fn, so fn must not call
// back into the same Retained.
package topic
