using System.Collections.Generic;

namespace Example.Caching
{
    /// <summary>
    /// A least-recently-used cache.
    /// </summary>
    public class LruCache<TKey, TValue>
    {
        private readonly Dictionary<TKey, TValue> items = new();

        /// <summary>Gets a value, or default.</summary>
        public TValue Get(TKey key)
        {
            return items.TryGetValue(key, out var value) ? value : default;
        }
    }

    public interface IHandler
    {
        void Evicted(object key);
    }

    public enum Policy { Lru, Fifo }
}
