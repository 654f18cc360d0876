package tuf

import (
	"context"
	"fmt"
	"sync"
)

// MemoryStore is a Store in memory, for tools and tests that need no
// persistence.
type MemoryStore struct {
	mu sync.Mutex
	m  map[string][]byte
}

var _ Store = (*MemoryStore)(nil)

// LoadMetadata implements Store.
func (s *MemoryStore) LoadMetadata(role string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.m[role]...), nil
}

// StoreMetadata implements Store.
func (s *MemoryStore) StoreMetadata(role string, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string][]byte{}
	}
	s.m[role] = append([]byte(nil), data...)
	return nil
}

// DeleteMetadata implements Store.
func (s *MemoryStore) DeleteMetadata(role string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, role)
	return nil
}

// MapFetcher serves metadata files from a map of name to bytes; a missing
// name is ErrNotFound. The zero value serves nothing.
type MapFetcher struct {
	mu    sync.Mutex
	files map[string][]byte
}

var _ Fetcher = (*MapFetcher)(nil)

// Set serves data under name (nil removes it).
func (f *MapFetcher) Set(name string, data []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.files == nil {
		f.files = map[string][]byte{}
	}
	if data == nil {
		delete(f.files, name)
		return
	}
	f.files[name] = append([]byte(nil), data...)
}

// Get returns what is served under name, or nil.
func (f *MapFetcher) Get(name string) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]byte(nil), f.files[name]...)
}

// FetchMetadata implements Fetcher.
func (f *MapFetcher) FetchMetadata(_ context.Context, name string, maxLen int64) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.files[name]
	if !ok {
		return nil, fmt.Errorf("%s: %w", name, ErrNotFound)
	}
	if int64(len(b)) > maxLen {
		return nil, fmt.Errorf("%s is %d bytes, limit %d: %w", name, len(b), maxLen, ErrTooLarge)
	}
	return append([]byte(nil), b...), nil
}
