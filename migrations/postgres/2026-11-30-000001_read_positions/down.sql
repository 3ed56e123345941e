DROP INDEX messages_author;
DROP TABLE read_positions;
