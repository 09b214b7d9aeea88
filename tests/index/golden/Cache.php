<?php

namespace App\Cache;

/**
 * A least-recently-used cache.
 */
class LruCache
{
    private array $items = [];

    /**
     * Returns the value for a key.
     */
    public function get(string $key): mixed
    {
        return $this->items[$key] ?? null;
    }
}

interface Handler
{
    public function evicted(string $key): void;
}

function make_cache(): LruCache
{
    return new LruCache();
}
