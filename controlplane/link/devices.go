package link

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/starling-edge/starling/controlplane/store"
	"github.com/starling-edge/starling/shared/wire"
)

// handleStatus registers the device on its first hello and records
// online/offline. A retained message is the broker's memory of an earlier
// state, not a sign of life, so it does not move LastSeen.
func (l *Link) handleStatus(id string, payload []byte, retained bool) error {
	status := string(bytes.TrimSpace(payload))
	if status == "" {
		return nil // a cleared retained message
	}
	if status != wire.Online && status != wire.Offline {
		return fmt.Errorf("status %.32q is neither %q nor %q", status, wire.Online, wire.Offline)
	}
	now := l.opts.Now().UTC()
	_, err := l.opts.Store.UpdateDevice(context.Background(), id, true, func(d *store.Device) error {
		if d.Registered.IsZero() {
			d.Registered = now
			l.log.Info("device registered", "device", id)
		}
		if !retained {
			d.LastSeen = now
		} else if d.Status == status {
			return store.ErrNoChange
		}
		d.Status = status
		return nil
	})
	return err
}

// handleReported stores a device's reported state, registering the device
// if this is its first hello.
func (l *Link) handleReported(id string, payload []byte, retained bool) error {
	if len(bytes.TrimSpace(payload)) == 0 {
		return nil // a cleared retained message
	}
	var rs wire.ReportedState
	if err := json.Unmarshal(payload, &rs); err != nil {
		return fmt.Errorf("reported state is not valid JSON: %w", err)
	}
	switch {
	case rs.DeviceID == "":
		rs.DeviceID = id
	case rs.DeviceID != id:
		return fmt.Errorf("reported state names device %q on the topic of %q", rs.DeviceID, id)
	}
	if rs.Generation < 0 {
		return fmt.Errorf("reported generation %d is negative", rs.Generation)
	}
	now := l.opts.Now().UTC()
	_, err := l.opts.Store.UpdateDevice(context.Background(), id, true, func(d *store.Device) error {
		if d.Registered.IsZero() {
			d.Registered = now
			d.Status = wire.Offline
			l.log.Info("device registered", "device", id)
		}
		if !retained {
			d.LastSeen = now
			d.Status = wire.Online
		}
		d.Reported = &rs
		return nil
	})
	return err
}

// handleEvent appends a device event to its bounded history. Events from a
// device that never said hello are dropped: they cannot be shown anywhere.
func (l *Link) handleEvent(id string, payload []byte) error {
	var ev wire.Event
	if err := json.Unmarshal(payload, &ev); err != nil {
		return fmt.Errorf("event is not valid JSON: %w", err)
	}
	if ev.Kind == "" {
		return errors.New("event has no kind")
	}
	if ev.Time.IsZero() {
		ev.Time = l.opts.Now().UTC()
	}
	ctx := context.Background()
	if _, err := l.opts.Store.GetDevice(ctx, id); err != nil {
		return fmt.Errorf("event from unregistered device: %w", err)
	}
	if err := l.opts.Store.AppendEvent(ctx, id, ev); err != nil {
		return err
	}
	if ev.Kind == wire.EventRejected || ev.Kind == wire.EventFailed {
		l.log.Warn("device reports a model problem", "device", id, "kind", ev.Kind,
			"model", ev.Model, "version", ev.Version, "check", ev.Check, "message", ev.Message)
	}
	return nil
}
