package server

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/iotd/iotd/internal/broker"
	"github.com/iotd/iotd/internal/packet"
	"github.com/iotd/iotd/internal/topic"
)

// send queues a packet the server answers with (CONNACK refusals, PUBACK, PUBREC, PUBCOMP,
// PINGRESP) on c.
func (l *loop) send(c *conn, enc []byte) {
	if _, schedule := c.Enqueue(enc, false); schedule {
		l.batch.Add(c)
	}
}

// dispatch handles one decoded packet from c. The body aliases the read buffer.
func (l *loop) dispatch(c *conn, h packet.FixedHeader, body []byte) {
	if c.version == versionRefusing {
		return // the delayed refusal closes it; nothing it sends meanwhile counts
	}
	if c.client == nil {
		l.connect(c, h, body)
		return
	}
	b := l.srv.broker
	cl := c.client
	switch h.Type {
	case packet.TypePublish:
		p := &l.pub
		if err := packet.DecodePublish(h, body, p); err != nil {
			c.close(violation(err))
			return
		}
		if err := topic.ValidateName(p.Topic); err != nil {
			// [MQTT-3.3.2-2] wildcards in a topic name; [MQTT-4.7.3-1] empty name.
			c.close(violation(fmt.Errorf("publish topic %q: %w", p.Topic, err)))
			return
		}
		switch p.QoS {
		case packet.QoS0:
			b.Publish(cl, p, &l.batch)
		case packet.QoS1:
			b.Publish(cl, p, &l.batch)
			// [MQTT-4.3.2-2] PUBACK with the packet id, after taking ownership of the message.
			l.scr = (&packet.Puback{PacketID: p.PacketID}).Append(l.scr[:0])
			l.send(c, l.scr)
		case packet.QoS2:
			b.PublishQoS2(cl, p, &l.batch)
			// [MQTT-4.3.3-2] PUBREC for the first and for every retransmission.
			l.scr = (&packet.Pubrec{PacketID: p.PacketID}).Append(l.scr[:0])
			l.send(c, l.scr)
		}
	case packet.TypePuback, packet.TypePubrec, packet.TypePubcomp:
		id, err := ackID(h, body, c.version)
		if err != nil {
			c.close(violation(err))
			return
		}
		b.Ack(cl, h.Type, id, &l.batch)
	case packet.TypePubrel:
		id, err := ackID(h, body, c.version)
		if err != nil {
			c.close(violation(err))
			return
		}
		b.Pubrel(cl, id)
		// [MQTT-4.3.3-2] PUBCOMP with the same packet id, known or not.
		l.scr = (&packet.Pubcomp{PacketID: id}).Append(l.scr[:0])
		l.send(c, l.scr)
	case packet.TypeSubscribe, packet.TypeUnsubscribe:
		pk, err := packet.Decode(h, body, c.version)
		if err != nil {
			c.close(violation(err))
			return
		}
		if s, ok := pk.(*packet.Subscribe); ok {
			err = b.Subscribe(cl, s, &l.batch)
		} else {
			err = b.Unsubscribe(cl, pk.(*packet.Unsubscribe), &l.batch)
		}
		if err != nil {
			// [MQTT-4.8.0-1] a malformed filter is a protocol violation: close.
			c.close(violation(err))
		}
	case packet.TypePingreq:
		if _, err := packet.Decode(h, body, c.version); err != nil {
			c.close(violation(err))
			return
		}
		// [MQTT-3.12.4-1]
		l.scr = (&packet.Pingresp{}).Append(l.scr[:0])
		l.send(c, l.scr)
	case packet.TypeDisconnect:
		if _, err := packet.Decode(h, body, c.version); err != nil {
			c.close(violation(err))
			return
		}
		// [MQTT-3.14.4-3] discard the will; [MQTT-3.14.4-1], [MQTT-3.14.4-2]: close, send nothing more.
		b.DiscardWill(cl)
		c.graceful = true
		c.close(errDisconnect)
	case packet.TypeConnect:
		// [MQTT-3.1.0-2] a second CONNECT is a protocol violation.
		c.close(violation(errors.New("second CONNECT on one connection")))
	default:
		// CONNACK, SUBACK, UNSUBACK and PINGRESP only flow from server to client.
		c.close(violation(fmt.Errorf("%s sent by a client", h.Type)))
	}
}

func ackID(h packet.FixedHeader, body []byte, version byte) (uint16, error) {
	pk, err := packet.Decode(h, body, version)
	if err != nil {
		return 0, err
	}
	switch p := pk.(type) {
	case *packet.Puback:
		return p.PacketID, nil
	case *packet.Pubrec:
		return p.PacketID, nil
	case *packet.Pubrel:
		return p.PacketID, nil
	case *packet.Pubcomp:
		return p.PacketID, nil
	}
	return 0, fmt.Errorf("unexpected %s", h.Type)
}

// connect handles the first packet of a connection, which must be CONNECT ([MQTT-3.1.0-1]).
func (l *loop) connect(c *conn, h packet.FixedHeader, body []byte) {
	if h.Type != packet.TypeConnect {
		c.close(violation(fmt.Errorf("first packet is %s, not CONNECT", h.Type)))
		return
	}
	pk, err := packet.Decode(h, body, 0)
	if err != nil {
		var pe *packet.Error
		if errors.As(err, &pe) && pe.Code != packet.Accepted {
			// [MQTT-3.1.2-2] e.g. unsupported protocol level: answer, then close.
			l.refuse(c, pe.Code, violation(err))
			return
		}
		c.close(violation(err))
		return
	}
	cp := pk.(*packet.Connect)
	if max := l.srv.opts.MaxKeepAlive; max > 0 && (cp.KeepAlive == 0 || cp.KeepAlive > max) {
		// MQTT 3.1.1 cannot tell a client to use another keep-alive, so, like Mosquitto, refuse it.
		l.refuse(c, packet.RefusedIdentifierRejected, fmt.Errorf("%w: keep-alive %d outside 1..%d", errRefused, cp.KeepAlive, max))
		return
	}
	if cp.Will != nil {
		if err := topic.ValidateName([]byte(cp.Will.Topic)); err != nil {
			// The will topic is a topic name: no wildcards ([MQTT-3.3.2-2]).
			c.close(violation(fmt.Errorf("will topic %q: %w", cp.Will.Topic, err)))
			return
		}
	}
	req := broker.ConnectRequest{Connect: cp, Conn: c, Listener: *c.listener, RemoteAddr: c.remote.String()}
	if c.ident != nil {
		req.CertIdentity = *c.ident
	}
	cl, code := l.srv.broker.Connect(l.srv.baseCtx, req, &l.batch)
	if lim := l.srv.opts.Limiter; lim != nil && c.remote.IsValid() {
		switch code {
		case packet.Accepted:
			lim.Succeeded(c.remote.Addr())
		case packet.RefusedBadUsernameOrPassword, packet.RefusedNotAuthorized:
			// Growing delays after failed logins from one source slow down password guessing: the
			// refusal is answered only after the source's current backoff.
			now := time.Now()
			delay := lim.LoginDelay(c.remote.Addr(), now)
			lim.Failed(c.remote.Addr(), now)
			if delay > 0 {
				l.srv.log.Info("login failed: answer delayed", "remote", c.remote.String(), "delay", delay.String())
				c.version = versionRefusing
				time.AfterFunc(delay, func() { c.refuseLater(code) })
				return
			}
		}
	}
	if code != packet.Accepted {
		l.refuse(c, code, fmt.Errorf("%w: %s", errRefused, code))
		return
	}
	c.client = cl
	c.connected.Store(true)
	c.version = cp.ProtocolLevel
	c.lastActive.Store(l.srv.wheel.now())
	// [MQTT-3.1.2-24] close after 1.5 times the keep-alive without a control packet.
	c.timeout.Store(int32(cp.KeepAlive) * 1500)
	l.srv.wheel.reset(c)
	if l.srv.log.Enabled(l.srv.baseCtx, slog.LevelDebug) { // the arguments cost allocations
		l.srv.log.Debug("client connected", "client_id", cl.ClientID(), "conn", c.provisionalID(), "session", cl.Key(),
			"clean_session", cp.CleanSession, "keep_alive", cp.KeepAlive, "remote", c.remote.String())
	}
}

// refuse answers CONNECT with a refusing CONNACK and closes ([MQTT-3.2.2-4], [MQTT-3.2.2-5]).
func (l *loop) refuse(c *conn, code packet.ConnackCode, reason error) {
	l.scr = (&packet.Connack{ReturnCode: code}).Append(l.scr[:0])
	l.send(c, l.scr)
	c.close(reason)
}
