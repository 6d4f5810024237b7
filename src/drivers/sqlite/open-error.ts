/**
 * The name a SQLite worker gives to an error thrown while opening its database, so the
 * main thread reports it as a failed connect, not a failed query. Its own module: the
 * worker side (better-sqlite3) and the main side (the error classes) share only this.
 */
export const OPEN_ERROR_NAME = 'SqliteOpenError';
