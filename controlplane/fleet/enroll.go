package fleet

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/starling-edge/starling/shared/wire"
)

// Enrollment token lifetimes.
const (
	DefaultTokenTTL = time.Hour
	MaxTokenTTL     = 30 * 24 * time.Hour
)

// enrollPrefix marks enrollment tokens, so one pasted in the wrong place
// is recognisable.
const enrollPrefix = "stl-enroll-"

type enrollToken struct {
	DeviceID  string    `json:"device_id,omitempty"` // empty: the device names itself
	Created   time.Time `json:"created"`
	CreatedBy string    `json:"created_by,omitempty"`
	Expires   time.Time `json:"expires"`
	Used      time.Time `json:"used,omitzero"`
	UsedBy    string    `json:"used_by,omitempty"`
}

// certRecord is one certificate issued to a device.
type certRecord struct {
	Serial   string    `json:"serial"`
	Issued   time.Time `json:"issued"`
	NotAfter time.Time `json:"not_after"`
	Revoked  time.Time `json:"revoked,omitzero"`
}

type deviceRecord struct {
	ID    string       `json:"id"`
	Certs []certRecord `json:"certs"`
}

// Device is a device's identity record as the API shows it.
type Device struct {
	ID string `json:"id"`
	// Enrolled is when its newest certificate was issued.
	Enrolled time.Time `json:"enrolled"`
	// Revoked is true when no certificate of the device is valid.
	Revoked bool `json:"revoked"`
	// Certificates counts every certificate ever issued to it.
	Certificates int `json:"certificates"`
}

func validDeviceID(id string) bool { return wire.ValidDeviceID(id) && !reservedID(id) }

// reservedID reports ids no device may take: the control plane's own.
func reservedID(id string) bool { return strings.EqualFold(id, ControlIdentity) }

// NewEnrollToken makes a one-time enrollment token valid for ttl (default
// DefaultTokenTTL, at most MaxTokenTTL). With a deviceID the token only
// enrolls that device; without one the device's request names it. Only
// the token's hash is stored: the returned value cannot be shown again.
func (f *Fleet) NewEnrollToken(deviceID string, ttl time.Duration, createdBy string) (token string, expires time.Time, err error) {
	if deviceID != "" && !validDeviceID(deviceID) {
		return "", time.Time{}, fmt.Errorf("%w: device id %.80q: want 1-64 of [A-Za-z0-9._-], not starting with a dot, not %q", ErrInvalid, deviceID, ControlIdentity)
	}
	if ttl == 0 {
		ttl = DefaultTokenTTL
	}
	if ttl < 0 || ttl > MaxTokenTTL {
		return "", time.Time{}, fmt.Errorf("%w: token lifetime %s outside 1s..%s", ErrInvalid, ttl, MaxTokenTTL)
	}
	var b [32]byte
	rand.Read(b[:])
	token = enrollPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	now := f.opts.Now().UTC()
	rec := enrollToken{DeviceID: deviceID, Created: now, CreatedBy: createdBy, Expires: now.Add(ttl)}
	v, _ := json.Marshal(rec)
	if err := f.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketEnroll).Put(hashToken(token), v)
	}); err != nil {
		return "", time.Time{}, fmt.Errorf("fleet: store enrollment token: %w", err)
	}
	return token, rec.Expires, nil
}

// Enrollment is what a device gets for a valid token and request.
type Enrollment struct {
	DeviceID    string `json:"device_id"`
	Certificate string `json:"certificate"` // PEM
	CA          string `json:"ca"`          // PEM, the fleet CA
}

// Enroll redeems a one-time token for a device certificate over the public
// key in csr (PEM or DER). The device id is the token's, or, for a token
// bound to no device, the request's common name; a request naming another
// device than its token is refused. The token is spent in the same
// transaction that records the certificate: a replay gets ErrTokenUsed,
// a late one ErrTokenExpired, an unknown one ErrTokenUnknown.
func (f *Fleet) Enroll(token string, csrData []byte) (Enrollment, error) {
	csr, err := checkCSR(csrData)
	if err != nil {
		return Enrollment{}, err
	}
	now := f.opts.Now().UTC()
	var out Enrollment
	err = f.db.Update(func(tx *bolt.Tx) error {
		tb := tx.Bucket(bucketEnroll)
		key := hashToken(token)
		v := tb.Get(key)
		if v == nil {
			return fmt.Errorf("%w: the enrollment token is not one this control plane issued (check for a typo, or make one with `starlingctl device enroll-token`)", ErrTokenUnknown)
		}
		var rec enrollToken
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("fleet: enrollment token record: %w", err)
		}
		if !rec.Used.IsZero() {
			return fmt.Errorf("%w: it was redeemed at %s by device %s; each token works once, make a new one", ErrTokenUsed, rec.Used.Format(time.RFC3339), rec.UsedBy)
		}
		if !now.Before(rec.Expires) {
			return fmt.Errorf("%w: it expired at %s; make a new one", ErrTokenExpired, rec.Expires.Format(time.RFC3339))
		}
		id := csr.Subject.CommonName
		switch {
		case rec.DeviceID != "" && id != "" && id != rec.DeviceID:
			return fmt.Errorf("%w: the request is for device %q but the token is for device %q", ErrCSR, id, rec.DeviceID)
		case rec.DeviceID != "":
			id = rec.DeviceID
		case !validDeviceID(id):
			return fmt.Errorf("%w: the request's common name %.80q is not a usable device id (1-64 of [A-Za-z0-9._-], not %q)", ErrCSR, id, ControlIdentity)
		}
		cert, certPEM, err := f.issue(f.deviceTemplate(id), csr.PublicKey)
		if err != nil {
			return err
		}
		rec.Used, rec.UsedBy = now, id
		nv, _ := json.Marshal(rec)
		if err := tb.Put(key, nv); err != nil {
			return err
		}
		db := tx.Bucket(bucketDevices)
		var d deviceRecord
		if dv := db.Get([]byte(id)); dv != nil {
			if err := json.Unmarshal(dv, &d); err != nil {
				return fmt.Errorf("fleet: device record %s: %w", id, err)
			}
		}
		d.ID = id
		d.Certs = append(d.Certs, certRecord{Serial: serialHex(cert.SerialNumber), Issued: now, NotAfter: cert.NotAfter.UTC()})
		dv, _ := json.Marshal(d)
		if err := db.Put([]byte(id), dv); err != nil {
			return err
		}
		out = Enrollment{DeviceID: id, Certificate: string(certPEM), CA: string(f.ca.pem)}
		return nil
	})
	if err != nil {
		return Enrollment{}, err
	}
	f.log.Info("device enrolled", "device", out.DeviceID)
	return out, nil
}

// OnRevoke registers fn to run after every revocation, with the device id
// (the embedded broker disconnects the device; the Mosquitto writer
// rewrites the CRL and ACL and reloads the broker). fn must not block for
// long.
func (f *Fleet) OnRevoke(fn func(deviceID string)) {
	f.mu.Lock()
	f.onRevoke = append(f.onRevoke, fn)
	f.mu.Unlock()
}

// Revoke revokes every certificate issued to a device so far. It returns
// ErrNotFound for a device that never enrolled. Revoking twice is not an
// error. Every OnRevoke function runs before it returns.
func (f *Fleet) Revoke(deviceID string) error {
	now := f.opts.Now().UTC()
	var serials []string
	err := f.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDevices)
		v := b.Get([]byte(deviceID))
		if v == nil {
			return fmt.Errorf("%w: device %.80q never enrolled", ErrNotFound, deviceID)
		}
		var d deviceRecord
		if err := json.Unmarshal(v, &d); err != nil {
			return fmt.Errorf("fleet: device record %s: %w", deviceID, err)
		}
		for i := range d.Certs {
			if d.Certs[i].Revoked.IsZero() {
				d.Certs[i].Revoked = now
			}
			serials = append(serials, d.Certs[i].Serial)
		}
		nv, _ := json.Marshal(d)
		return b.Put([]byte(deviceID), nv)
	})
	if err != nil {
		return err
	}
	f.mu.Lock()
	for _, s := range serials {
		f.revoked[s] = true
	}
	hooks := append([]func(string){}, f.onRevoke...)
	f.mu.Unlock()
	f.log.Info("device revoked", "device", deviceID, "certificates", len(serials))
	for _, h := range hooks {
		h(deviceID)
	}
	return nil
}

// RevokedDevices returns the ids of devices with at least one revoked
// certificate and no valid one, sorted.
func (f *Fleet) RevokedDevices() ([]string, error) {
	ds, err := f.Devices()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, d := range ds {
		if d.Revoked {
			out = append(out, d.ID)
		}
	}
	return out, nil
}

// Devices lists every enrolled device, sorted by id.
func (f *Fleet) Devices() ([]Device, error) {
	var out []Device
	err := f.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDevices).ForEach(func(_, v []byte) error {
			var d deviceRecord
			if err := json.Unmarshal(v, &d); err != nil {
				return err
			}
			dev := Device{ID: d.ID, Certificates: len(d.Certs), Revoked: len(d.Certs) > 0}
			for _, c := range d.Certs {
				if c.Issued.After(dev.Enrolled) {
					dev.Enrolled = c.Issued
				}
				if c.Revoked.IsZero() {
					dev.Revoked = false
				}
			}
			out = append(out, dev)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("fleet: list devices: %w", err)
	}
	return out, nil
}
