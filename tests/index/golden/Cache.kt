package org.example.cache

/**
 * A least-recently-used cache.
 */
class LruCache<K, V>(private val max: Int) {
    private val items = LinkedHashMap<K, V>()

    /** Returns the value for [key]. */
    fun get(key: K): V? = items[key]
}

interface Handler {
    fun evicted(key: Any)
}

object Registry {
    val caches = mutableListOf<LruCache<*, *>>()
}

fun parseConfig(text: String): Map<String, String> =
    text.lines().associate { it.substringBefore("=") to it.substringAfter("=") }
