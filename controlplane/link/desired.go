package link

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/starling-edge/starling/controlplane/store"
	"github.com/starling-edge/starling/shared/wire"
)

// SetDesired makes refs the desired models of a registered device: it looks
// up each version's signed metadata, stores the new state with the next
// generation, and publishes it retained (QoS 1). It returns store.ErrNotFound
// (wrapped) for an unknown device or model version, and ErrPublish when the
// state is stored but the broker has not acknowledged it yet; it is then
// published again after the next (re)connection.
func (l *Link) SetDesired(ctx context.Context, deviceID string, refs []store.ModelRef) (wire.DesiredState, error) {
	if err := l.ctx.Err(); err != nil {
		return wire.DesiredState{}, ErrClosed
	}
	if _, err := l.opts.Store.GetDevice(ctx, deviceID); err != nil {
		return wire.DesiredState{}, fmt.Errorf("link.SetDesired %s: %w", deviceID, err)
	}
	models := make([]wire.DesiredModel, 0, len(refs))
	for _, ref := range refs {
		m, err := l.opts.Store.GetModel(ctx, ref.Name, ref.Version)
		if err != nil {
			return wire.DesiredState{}, fmt.Errorf("link.SetDesired %s: model %s version %s: %w", deviceID, ref.Name, ref.Version, err)
		}
		models = append(models, wire.DesiredModel{Name: m.Name, Version: m.Version, Metadata: m.Metadata})
	}

	l.desiredMu.Lock()
	defer l.desiredMu.Unlock()
	now := l.opts.Now().UTC()
	d, err := l.opts.Store.UpdateDevice(ctx, deviceID, false, func(d *store.Device) error {
		var gen int64
		if d.Desired != nil {
			gen = d.Desired.Generation
		}
		d.Desired = &wire.DesiredState{Generation: gen + 1, Models: models, Updated: now}
		return nil
	})
	if err != nil {
		return wire.DesiredState{}, fmt.Errorf("link.SetDesired %s: %w", deviceID, err)
	}
	if err := l.publishDesiredLocked(ctx, d); err != nil {
		return *d.Desired, fmt.Errorf("link.SetDesired %s: generation %d stored, not yet delivered: %w", deviceID, d.Desired.Generation, err)
	}
	return *d.Desired, nil
}

// RepublishDesired publishes stored desired states: every one when all is
// true (an embedded broker forgets retained messages when it restarts), or
// only those the broker has not acknowledged yet.
func (l *Link) RepublishDesired(ctx context.Context, all bool) error {
	devices, err := l.opts.Store.ListDevices(ctx)
	if err != nil {
		return fmt.Errorf("link.RepublishDesired: %w", err)
	}
	var errs []error
	for _, d := range devices {
		if d.Desired == nil || (!all && d.PublishedGeneration >= d.Desired.Generation) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		l.desiredMu.Lock()
		// Re-read under the lock: SetDesired may have moved on meanwhile.
		cur, err := l.opts.Store.GetDevice(ctx, d.ID)
		if err == nil && cur.Desired != nil && (all || cur.PublishedGeneration < cur.Desired.Generation) {
			err = l.publishDesiredLocked(ctx, cur)
		}
		l.desiredMu.Unlock()
		if err != nil {
			errs = append(errs, fmt.Errorf("device %s: %w", d.ID, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("link.RepublishDesired: %w", errors.Join(errs...))
	}
	return nil
}

// publishDesiredLocked publishes d's desired state retained and records the
// acknowledged generation. The caller holds desiredMu.
func (l *Link) publishDesiredLocked(ctx context.Context, d store.Device) error {
	body, err := json.Marshal(d.Desired)
	if err != nil {
		return err
	}
	tok := l.client.Publish(wire.DeviceTopic(d.ID, wire.Desired), 1, true, body)
	if !tok.WaitTimeout(l.opts.PublishTimeout) {
		return fmt.Errorf("%w within %s", ErrPublish, l.opts.PublishTimeout)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("%w: %v", ErrPublish, err)
	}
	gen := d.Desired.Generation
	_, err = l.opts.Store.UpdateDevice(ctx, d.ID, false, func(d *store.Device) error {
		if d.PublishedGeneration >= gen {
			return store.ErrNoChange
		}
		d.PublishedGeneration = gen
		return nil
	})
	return err
}
