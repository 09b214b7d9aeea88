package example.cache

import scala.collection.mutable

/** A least-recently-used cache. */
class LruCache[K, V](max: Int) {
  private val items = mutable.LinkedHashMap.empty[K, V]

  /** Returns the value for a key. */
  def get(key: K): Option[V] = items.get(key)
}

trait Handler {
  def evicted(key: Any): Unit
}

object Config {
  def parse(text: String): Map[String, String] = Map.empty
}
