import * as React from "react";

interface Props {
  title: string;
}

/** The page header. */
export const Header: React.FC<Props> = ({ title }) => {
  return <h1>{title}</h1>;
};

export function App(): JSX.Element {
  return <Header title="hello" />;
}
