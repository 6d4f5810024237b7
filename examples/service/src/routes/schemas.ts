/** Request and response schemas the routes share (TypeBox: JSON Schema with static types). */
import { Type } from 'typebox';

/** The largest id every database here stores (a 32-bit INTEGER); beyond it, a 400 rather than a database error. */
export const MAX_ID = 2_147_483_647;
export const Id = Type.Integer({ minimum: 1, maximum: MAX_ID });

export const IdParams = Type.Object({ id: Id });

/** Keyset pagination: the items after id `after`, `limit` at a time; `next` is the `after` of the next page. */
export const PageQuery = Type.Object({
  limit: Type.Integer({ minimum: 1, maximum: 100, default: 20 }),
  after: Type.Integer({ minimum: 0, maximum: MAX_ID, default: 0 }),
});

export const Text = (maxLength: number) => Type.String({ minLength: 1, maxLength, pattern: '\\S' });

export const AuthorOut = Type.Object({
  id: Type.Integer(),
  name: Type.String(),
  email: Type.String(),
  createdAt: Type.String(),
});

export const PostSummaryOut = Type.Object({
  id: Type.Integer(),
  authorId: Type.Integer(),
  title: Type.String(),
  slug: Type.String(),
  excerpt: Type.String(),
  commentCount: Type.Integer(),
  createdAt: Type.String(),
});

export const PostOut = Type.Object({ ...PostSummaryOut.properties, body: Type.String() });

/** A new comment (POST /posts/:id/comments); here rather than in posts.ts so bench/service-baseline.ts validates with it too. */
export const CommentIn = Type.Object({ commenter: Text(100), body: Text(5_000) }, { additionalProperties: false });

export const CommentOut = Type.Object({
  id: Type.Integer(),
  postId: Type.Integer(),
  commenter: Type.String(),
  body: Type.String(),
  createdAt: Type.String(),
});

export const Page = <T extends ReturnType<typeof Type.Object>>(item: T) =>
  Type.Object({ items: Type.Array(item), next: Type.Union([Type.Integer(), Type.Null()]) });

/** What every error answers (see http-errors.ts). */
export const ErrorOut = Type.Object({ statusCode: Type.Integer(), error: Type.String(), message: Type.String() });
