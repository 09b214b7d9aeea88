require "set"

# A least-recently-used cache.
class LruCache
  # Creates a cache of at most +max+ entries.
  def initialize(max)
    @max = max
    @items = {}
  end

  # Returns the value for +key+ and marks it recent.
  def get(key)
    value = @items.delete(key)
    @items[key] = value unless value.nil?
    value
  end
end

module Helpers
  def self.slug(text)
    text.downcase.gsub(/\W+/, "-")
  end
end
