package org.example.cache;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * A least-recently-used cache on top of LinkedHashMap.
 *
 * @param <K> key type
 * @param <V> value type
 */
public class LruCache<K, V> extends LinkedHashMap<K, V> {
    private final int capacity;

    /** Creates a cache holding at most {@code capacity} entries. */
    public LruCache(int capacity) {
        super(16, 0.75f, true);
        this.capacity = capacity;
    }

    /**
     * Evicts the eldest entry when the cache is full.
     */
    @Override
    protected boolean removeEldestEntry(Map.Entry<K, V> eldest) {
        return size() > capacity;
    }

    /** Listener of evictions. */
    public interface Handler {
        void evicted(Object key);
    }
}
