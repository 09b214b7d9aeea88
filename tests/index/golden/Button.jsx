import React, { useState } from "react";

/**
 * A button that counts its clicks.
 */
export function Counter({ label }) {
  const [count, setCount] = useState(0);
  return (
    <button onClick={() => setCount(count + 1)}>
      {label}: {count}
    </button>
  );
}

const styles = {
  primary: { color: "white" },
  danger: { color: "red" },
  muted: { color: "gray" },
};

export default class Panel extends React.Component {
  render() {
    return <div style={styles.primary}>{this.props.children}</div>;
  }
}
