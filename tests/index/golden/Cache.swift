import Foundation

/// A least-recently-used cache.
final class LruCache<Key: Hashable, Value> {
    private var items: [Key: Value] = [:]

    /// Returns the value for a key.
    func get(_ key: Key) -> Value? {
        return items[key]
    }
}

protocol Handler {
    func evicted(_ key: String)
}

struct Point {
    var x: Int
    var y: Int
}

func parseConfig(_ text: String) -> [String: String] {
    return [:]
}
