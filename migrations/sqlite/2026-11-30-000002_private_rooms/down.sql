DROP TABLE room_members;
ALTER TABLE rooms DROP COLUMN creator;
ALTER TABLE rooms DROP COLUMN private;
