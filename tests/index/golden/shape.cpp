#include <cmath>
#include <string>

namespace geo {

// A shape with an area.
class Shape {
public:
    virtual ~Shape() = default;
    virtual double area() const = 0;
};

struct Circle : Shape {
    double r;
    double area() const override { return M_PI * r * r; }
};

// Scales a circle in place.
void scale(Circle &c, double factor) {
    c.r *= factor;
}

}  // namespace geo

std::string geo_name(const geo::Shape &s) {
    return "shape";
}
