DROP TABLE room_members;
ALTER TABLE rooms DROP COLUMN creator, DROP COLUMN private;
