import { EventEmitter } from "events";

/** Options of an LruCache. */
export interface CacheOptions {
  max: number;
  ttl?: number;
}

export type Key = string | number;

export enum Policy {
  Lru,
  Fifo,
}

/**
 * A least-recently-used cache.
 */
export class LruCache<V> extends EventEmitter {
  private items = new Map<Key, V>();

  constructor(private options: CacheOptions) {
    super();
  }

  /** Returns the value and marks it as recently used. */
  get(key: Key): V | undefined {
    const value = this.items.get(key);
    if (value !== undefined) {
      this.items.delete(key);
      this.items.set(key, value);
    }
    return value;
  }
}

export const parseConfig = (text: string): CacheOptions => {
  return JSON.parse(text) as CacheOptions;
};

export function createCache<V>(max: number): LruCache<V> {
  return new LruCache<V>({ max });
}
