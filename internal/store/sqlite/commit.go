package sqlite

import (
	"context"
	"fmt"

	"github.com/iotd/iotd/internal/store"
)

// Commit implements store.Backend: ops are applied in one transaction, under synchronous=FULL
// when sync is true (the WAL is fsynced before Commit returns) and synchronous=NORMAL otherwise.
// The driver copies every value it binds, so nothing of ops is kept.
func (b *Backend) Commit(ops []store.Op, sync bool) error {
	if b.closed {
		return store.ErrClosed
	}
	for i := range ops {
		switch k := ops[i].Kind; {
		case k == 0 || k > store.DeleteInbound:
			return fmt.Errorf("store %s: unknown operation %s", b.path, k)
		case k == store.PutSession && ops[i].Session == nil:
			return fmt.Errorf("store %s: PutSession %q without a session", b.path, ops[i].ClientID)
		}
	}
	if len(ops) == 0 {
		return nil
	}
	if err := b.setSync(sync); err != nil {
		return err
	}
	if _, err := b.st[stBegin].Exec(); err != nil {
		return b.engineErr("beginning a transaction", err)
	}
	for i := range ops {
		if err := b.apply(&ops[i]); err != nil {
			b.rollback()
			return b.engineErr(fmt.Sprintf("applying %s", ops[i].Kind), err)
		}
	}
	if _, err := b.st[stCommit].Exec(); err != nil {
		b.rollback()
		return b.engineErr("committing", err)
	}
	return nil
}

// rollback ends a failed transaction. Its own error is dropped: the error that made the
// transaction fail is the one reported, SQLite may already have rolled back (then ROLLBACK fails
// with "no transaction is active"), and a transaction that is somehow still open makes the next
// BEGIN fail, which is reported then.
func (b *Backend) rollback() {
	_, _ = b.st[stRollback].Exec()
}

// setSync switches PRAGMA synchronous when it differs from what the commit needs. SQLite refuses
// the switch inside a transaction, so it happens before BEGIN. The statement is compiled each time
// because SQLite applies this pragma when it compiles it, not when it runs it: a prepared
// "PRAGMA synchronous = FULL" takes effect once, at Prepare, and never again.
func (b *Backend) setSync(full bool) error {
	if b.full == full {
		return nil
	}
	q := "PRAGMA synchronous = NORMAL"
	if full {
		q = "PRAGMA synchronous = FULL"
	}
	if _, err := b.conn.ExecContext(context.Background(), q); err != nil {
		return b.engineErr("setting PRAGMA synchronous", err)
	}
	b.full = full
	return nil
}

// apply executes one operation inside the open transaction.
func (b *Backend) apply(op *store.Op) error {
	var err error
	switch op.Kind {
	case store.PutSession:
		var will any // nil binds NULL: no will
		if w := op.Session.Will; w != nil {
			b.will = appendWill(b.will[:0], w)
			will = b.will
		}
		_, err = b.st[stPutSession].Exec(op.ClientID, op.Session.DisconnectedAt, will)
	case store.DeleteSession:
		// Every table keyed by client id is matched on the whole id, never on a prefix.
		for _, st := range [...]int{stDelSession, stDelSessionSubs, stDelSessionOut, stDelSessionIn} {
			if _, err = b.st[st].Exec(op.ClientID); err != nil {
				break
			}
		}
	case store.PutSubscription:
		_, err = b.st[stPutSub].Exec(op.ClientID, op.Name, int64(op.QoS))
	case store.DeleteSubscription:
		_, err = b.st[stDelSub].Exec(op.ClientID, op.Name)
	case store.PutRetained:
		_, err = b.st[stPutRetained].Exec(op.Name, int64(op.QoS), blob(op.Payload))
	case store.DeleteRetained:
		_, err = b.st[stDelRetained].Exec(op.Name)
	case store.PutMessage:
		_, err = b.st[stPutMessage].Exec(int64(op.ID), op.Name, int64(op.QoS), op.Retain, blob(op.Payload))
	case store.DeleteMessage:
		_, err = b.st[stDelMessage].Exec(int64(op.ID))
	case store.PutOutbound:
		o := &op.Outbound
		_, err = b.st[stPutOutbound].Exec(op.ClientID, int64(o.Seq), int64(o.MsgID), int64(o.QoS), int64(o.State), int64(o.PacketID))
	case store.DeleteOutbound:
		_, err = b.st[stDelOutbound].Exec(op.ClientID, int64(op.ID))
	case store.PutInbound:
		_, err = b.st[stPutInbound].Exec(op.ClientID, int64(op.PacketID))
	case store.DeleteInbound:
		_, err = b.st[stDelInbound].Exec(op.ClientID, int64(op.PacketID))
	}
	return err
}

// blob returns p, or an empty slice for nil: the driver binds a nil slice as NULL, and an empty
// payload is a payload, not a missing one.
func blob(p []byte) []byte {
	if p == nil {
		return []byte{}
	}
	return p
}

// Sync implements store.Backend with a checkpoint: under synchronous=NORMAL or FULL SQLite fsyncs
// the WAL before it copies the WAL's pages into the database, then fsyncs the database, so every earlier
// commit is on the device when Sync returns and the database file alone holds it. A WAL with no
// new frames has been checkpointed, and so synced, already.
func (b *Backend) Sync() error {
	if b.closed {
		return store.ErrClosed
	}
	var busy, frames, copied int64
	if err := b.st[stCheckpoint].QueryRow().Scan(&busy, &frames, &copied); err != nil {
		return b.engineErr("checkpointing", err)
	}
	if busy != 0 || copied != frames {
		return fmt.Errorf("store %s: the checkpoint copied %d of %d WAL frames", b.path, copied, frames)
	}
	return nil
}
