// Package cache implements a small LRU cache.
package cache

import (
	"container/list"
	"sync"
)

// DefaultSize is the capacity used when none is given.
const DefaultSize = 128

// Cache is a fixed-size LRU cache. It is safe for concurrent use.
type Cache struct {
	mu    sync.Mutex
	size  int
	ll    *list.List
	items map[string]*list.Element
}

// Handler is called for every evicted entry.
type Handler interface {
	Evicted(key string, value any)
}

// New returns a cache holding at most size entries.
func New(size int) *Cache {
	if size <= 0 {
		size = DefaultSize
	}
	return &Cache{size: size, ll: list.New(), items: make(map[string]*list.Element)}
}

// evict removes the least recently used entry.
func (c *Cache) evict() {
	if e := c.ll.Back(); e != nil {
		c.ll.Remove(e)
	}
}
