/**
 * The models: rows come back as these classes, with their relations, and each knows how it
 * is shown to API clients (`toJSON`, which Fastify's serializer calls).
 */
import { belongsTo, defineModels, hasMany, manyToMany } from 'sluice';
import { excerptOf, isoTime } from './presentation.js';
import type { DB } from './schema.js';

const Model = defineModels<DB>();

export class Author extends Model('authors') {
  static readonly relations = {
    posts: hasMany(() => Post, { foreignKey: 'author_id' }),
  };

  toJSON(): AuthorJson {
    return { id: this.id, name: this.name, email: this.email, createdAt: isoTime(this.created_at) };
  }
}

export class Post extends Model('posts') {
  static readonly relations = {
    author: belongsTo(() => Author, { foreignKey: 'author_id' }),
    comments: hasMany(() => Comment, { foreignKey: 'post_id' }),
    tags: manyToMany(() => Tag, { through: 'post_tags', from: 'post_id', to: 'tag_id' }),
  };

  /** The first line of the body, cut at 120 characters: what a list shows. */
  get excerpt(): string {
    return excerptOf(this.body);
  }

  /** What a list shows: everything but the body. */
  summary(): PostSummaryJson {
    return {
      id: this.id,
      authorId: this.author_id,
      title: this.title,
      slug: this.slug,
      excerpt: this.excerpt,
      commentCount: Number(this.comment_count),
      createdAt: isoTime(this.created_at),
    };
  }

  toJSON(): PostJson {
    return { ...this.summary(), body: this.body };
  }
}

export class Comment extends Model('comments') {
  toJSON(): CommentJson {
    return { id: this.id, postId: this.post_id, commenter: this.commenter, body: this.body, createdAt: isoTime(this.created_at) };
  }
}

export class Tag extends Model('tags') {
  toJSON(): string {
    return this.name;
  }
}

export interface AuthorJson {
  readonly id: number;
  readonly name: string;
  readonly email: string;
  readonly createdAt: string;
}

export interface PostSummaryJson {
  readonly id: number;
  readonly authorId: number;
  readonly title: string;
  readonly slug: string;
  readonly excerpt: string;
  readonly commentCount: number;
  readonly createdAt: string;
}

export interface PostJson extends PostSummaryJson {
  readonly body: string;
}

export interface CommentJson {
  readonly id: number;
  readonly postId: number;
  readonly commenter: string;
  readonly body: string;
  readonly createdAt: string;
}
