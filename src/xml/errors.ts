/** The input is not XML this program accepts; the message names what is wrong. */
export class XmlInputError extends Error {
  override name = 'XmlInputError';
}
